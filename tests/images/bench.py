"""`make bench-images`: how long `make images` takes cold and warm, and how large the images are,
into docs/benchmarks.md (section "images").

    uv run python -m tests.images.bench

Cold: every layer rebuilt (``NO_CACHE=1 config/images/build.sh <image>``), from the local
Debian base (kept: ~25 s to debootstrap once); Debian's packages are downloaded again, Python
packages come from uv's cache mount where this machine has them. Warm: the same command
again with podman's layer cache, nothing changed (what `make test` pays before the image
tests).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import UTC, datetime

from streamflow_jobs.bench import write_section
from tests.images.containers import PODMAN, REGISTRY, ROOT, VERSION

IMAGES = ("operator", "jobs", "airflow")


def build(name: str, cold: bool) -> float:
    env = {**os.environ, **({"NO_CACHE": "1"} if cold else {})}
    start = time.monotonic()
    subprocess.run(
        [str(ROOT / "config/images/build.sh"), name],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - start


def size_mb(name: str) -> float:
    out = subprocess.run(
        [str(PODMAN), "image", "inspect", "--format", "{{.Size}}", f"{REGISTRY}/{name}:{VERSION}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip()) / 1e6


def main() -> None:
    subprocess.run(["make", "-s", "wheel"], cwd=ROOT, check=True)
    rows = []
    for name in IMAGES:
        cold = build(name, cold=True)
        warm = build(name, cold=False)
        rows.append((name, cold, warm, size_mb(name)))
        print(f"{name}: cold {cold:.0f} s, warm {warm:.1f} s, {rows[-1][3]:.0f} MB", flush=True)
    load = os.getloadavg()[0]
    lines = [
        "## Images (`make images`)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} by `make bench-images` "
        "(`uv run python -m tests.images.bench`) on "
        f"{os.cpu_count()} cores, {platform.machine()}, load {load:.1f} at the end (a shared "
        "machine: timings are noisy). Cold: every layer rebuilt (`NO_CACHE=1 "
        "config/images/build.sh <image>`) on the local Debian base: Debian's packages "
        "downloaded from the mirror, Python packages from uv's cache mount (podman keeps it "
        "between builds); warm: the same build again, nothing changed. Size: "
        "uncompressed, as `podman image inspect` reports it.",
        "",
        "| image | cold build | warm build | size |",
        "|---|---:|---:|---:|",
        *(
            f"| `{REGISTRY}/{n}:{VERSION}` | {c:.0f} s | {w:.1f} s | {s:.0f} MB |"
            for n, c, w, s in rows
        ),
    ]
    write_section("images", "\n".join(lines))


if __name__ == "__main__":
    main()
