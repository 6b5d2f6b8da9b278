"""PyFlink entry points of the three StreamFlow jobs (``-pym streamflow_jobs.flink.<job>``)."""
