"""Submit, watch, savepoint and stop the jobs on the local Flink session cluster (infra.py).

Submission goes through ``flink run -pym streamflow_jobs.flink.<job>``: the PythonDriver entry
point and arguments a FlinkDeployment uses. The rest is Flink's REST API.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamflow_jobs.flink.args import POSTGRES_DSN_ENV, JobArgs
from streamflow_jobs.infra import FlinkCluster, InfraError, flink_home, rest_json

MODULES = {
    "transaction-processor": "streamflow_jobs.flink.transaction_processor",
    "fraud-detector": "streamflow_jobs.flink.fraud_detector",
    "realtime-aggregator": "streamflow_jobs.flink.realtime_aggregator",
}
_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")


@dataclass
class Submitted:
    job: str
    job_id: str


def submit(
    cluster: FlinkCluster,
    job: str,
    args: JobArgs,
    *,
    dsn: str | None = None,
    parallelism: int = 1,
    config: Mapping[str, str] | None = None,
    restore_from: str | None = None,
    allow_non_restored: bool = False,
    timeout: float = 180.0,
) -> Submitted:
    """``flink run -d`` one job; return its id once the cluster has accepted it."""
    command = [
        str(flink_home() / "bin" / "flink"), "run", "-d",
        "-m", f"127.0.0.1:{cluster.rest_port}",
        "-p", str(parallelism),
    ]  # fmt: skip
    for key, value in (config or {}).items():
        command.append(f"-D{key}={value}")
    if restore_from:
        command += ["-s", restore_from]
        if allow_non_restored:
            command.append("--allowNonRestoredState")
    command += ["-pyclientexec", sys.executable, "-pyexec", sys.executable,
                "-pym", MODULES[job], *args.to_argv()]  # fmt: skip
    env = {**os.environ, **cluster.env()}
    env.pop(POSTGRES_DSN_ENV, None)
    if dsn:
        env[POSTGRES_DSN_ENV] = dsn
    log = cluster.base / "log" / f"submit-{job}-{int(time.time() * 1000)}.log"
    with log.open("wb") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                              timeout=timeout, check=False)  # fmt: skip
    text = log.read_text("utf-8", errors="replace")
    found = _JOB_ID.search(text)
    if done.returncode or not found:
        tail = " / ".join(line for line in text.strip().splitlines()[-4:])
        raise InfraError(f"flink run {job} failed (exit {done.returncode}): {tail}; see {log}")
    return Submitted(job, found.group(1))


def job_info(cluster: FlinkCluster, job_id: str) -> dict[str, Any]:
    info: dict[str, Any] = rest_json(f"{cluster.rest}/jobs/{job_id}")
    return info


def wait_running(cluster: FlinkCluster, job_id: str, timeout: float = 120.0) -> None:
    """Until every task of the job runs (sources are reading)."""
    deadline = time.monotonic() + timeout
    while True:
        info = job_info(cluster, job_id)
        state = info.get("state")
        if state in ("FAILED", "CANCELED", "FINISHED"):
            raise InfraError(f"job {info.get('name')} is {state}: {exception(cluster, job_id)}")
        vertices = info.get("vertices", [])
        if state == "RUNNING" and vertices and all(v["status"] == "RUNNING" for v in vertices):
            return
        if time.monotonic() > deadline:
            raise InfraError(f"job {info.get('name')} not running after {timeout:.0f} s ({state})")
        time.sleep(0.2)


def exception(cluster: FlinkCluster, job_id: str) -> str:
    """The root cause of the job's latest failure, one line ("" if none)."""
    try:
        info = rest_json(f"{cluster.rest}/jobs/{job_id}/exceptions")
    except OSError:
        return ""
    entries = info.get("exceptionHistory", {}).get("entries", [])
    if not entries:
        return ""
    trace = entries[0].get("stacktrace", "")
    causes = [line for line in trace.splitlines() if line.startswith("Caused by:")]
    return (causes[-1] if causes else trace.splitlines()[0] if trace else "").strip()


def checkpoints(cluster: FlinkCluster, job_id: str) -> dict[str, Any]:
    info: dict[str, Any] = rest_json(f"{cluster.rest}/jobs/{job_id}/checkpoints")
    return info


def completed_checkpoints(cluster: FlinkCluster, job_id: str) -> int:
    counts = checkpoints(cluster, job_id).get("counts", {})
    return int(counts.get("completed", 0))


def wait_checkpoint(
    cluster: FlinkCluster, job_id: str, after: int | None = None, timeout: float = 120.0
) -> int:
    """Until a checkpoint completes after the ``after``-th (default: the current count)."""
    start = completed_checkpoints(cluster, job_id) if after is None else after
    deadline = time.monotonic() + timeout
    while True:
        now = completed_checkpoints(cluster, job_id)
        if now > start:
            return now
        if time.monotonic() > deadline:
            raise InfraError(f"no checkpoint of {job_id} completed in {timeout:.0f} s")
        time.sleep(0.2)


def stop_with_savepoint(
    cluster: FlinkCluster, job_id: str, directory: Path | None = None, timeout: float = 180.0
) -> str:
    """Stop the job with a savepoint (canonical format); return the savepoint's path."""
    body: dict[str, Any] = {"drain": False, "formatType": "CANONICAL"}
    if directory is not None:
        body["targetDirectory"] = directory.as_uri()
    trigger = rest_json(f"{cluster.rest}/jobs/{job_id}/stop", "POST", body)
    deadline = time.monotonic() + timeout
    location = _await_savepoint(cluster, job_id, trigger["request-id"], timeout)
    # A completed savepoint is not a finished job: its sinks commit the last Kafka transaction
    # when they hear of the savepoint, after the REST call says COMPLETED. Only a finished job
    # has published everything, and a job restored from the savepoint (same transactional ids)
    # must not start beside it.
    while (state := job_info(cluster, job_id).get("state")) not in _TERMINAL:
        if time.monotonic() > deadline:
            raise InfraError(f"{job_id} still {state} {timeout:.0f} s after its savepoint")
        time.sleep(0.2)
    return location


_TERMINAL = ("FINISHED", "CANCELED", "FAILED")


def _await_savepoint(cluster: FlinkCluster, job_id: str, request: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        info = rest_json(f"{cluster.rest}/jobs/{job_id}/savepoints/{request}")
        if info.get("status", {}).get("id") == "COMPLETED":
            operation = info.get("operation", {})
            if "failure-cause" in operation:
                cause = operation["failure-cause"].get("stack-trace", "").splitlines()
                raise InfraError(f"savepoint failed: {cause[0] if cause else operation}")
            location: str = operation["location"]
            return location
        if time.monotonic() > deadline:
            raise InfraError(f"savepoint of {job_id} not done in {timeout:.0f} s")
        time.sleep(0.2)


def cancel(cluster: FlinkCluster, job_id: str, timeout: float = 60.0) -> None:
    try:
        rest_json(f"{cluster.rest}/jobs/{job_id}", "PATCH")
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job_info(cluster, job_id).get("state") in _TERMINAL:
            return
        time.sleep(0.2)


def running_jobs(cluster: FlinkCluster) -> list[dict[str, Any]]:
    jobs = rest_json(f"{cluster.rest}/jobs/overview").get("jobs", [])
    return [j for j in jobs if j.get("state") not in ("CANCELED", "FAILED", "FINISHED")]


def metrics(cluster: FlinkCluster, job_id: str, names: Sequence[str]) -> dict[str, float]:
    """Sum of the named user metrics (``streamflow.<name>``) over every vertex and subtask."""
    out = dict.fromkeys(names, 0.0)
    for vertex in job_info(cluster, job_id).get("vertices", []):
        base = f"{cluster.rest}/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
        available = rest_json(base)
        wanted = {m["id"] for m in available}
        for name in names:
            ids = [m for m in wanted if m.endswith(f"streamflow.{name}")]
            if ids:
                got = rest_json(f"{base}?get={','.join(ids)}&agg=sum")
                out[name] += sum(float(m.get("sum", 0)) for m in got)
    return out
