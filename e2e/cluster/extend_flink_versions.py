"""Read the Flink operator 1.10 FlinkDeployment CRD on stdin; write it with flinkVersion's enum
extended by v2_0..v2_2 (operator 1.13+ accepts them; 1.10 is the newest API jar on the mirror).
That enum is the only change: the rest of the schema is upstream's. Stdlib only (runs before uv)."""

import re
import sys

text = sys.stdin.read()
# fabric8 writes the enum as a YAML list under `flinkVersion:`; append after its last entry.
pattern = re.compile(r"(flinkVersion:\n(\s+)enum:\n(?:\2- \"?v1_\d+\"?\n)+)")
extended, count = pattern.subn(
    lambda m: m.group(1) + "".join(f'{m.group(2)}- "v2_{v}"\n' for v in range(3)), text
)
if not count:
    sys.exit("flinkVersion enum not found in the CRD: the upstream layout changed")
sys.stdout.write(extended)
