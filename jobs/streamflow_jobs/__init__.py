"""StreamFlow's data plane: event contracts, the fraud detector, generator and replay."""

from streamflow_jobs._compiled import check as _check_compiled

_check_compiled()
