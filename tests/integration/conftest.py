"""Real components shared by the whole test session (one of each): PostgreSQL (Debian's,
installed by `make test`), a Kafka broker (KRaft, from Maven jars) and a Flink session cluster
(the apache-flink wheel's distribution). They run from temporary directories, never from the
developer's `.infra/`, through the same code as `streamflow infra` (streamflow_jobs.infra).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from streamflow_jobs import infra
from streamflow_operator.render.flink import METRICS_CONFIG


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A libpq URL of a superuser on a running server (database ``postgres``)."""
    try:
        infra.postgres_bin_dir()
    except infra.InfraError as exc:
        pytest.fail(str(exc))
    base = Path(tempfile.mkdtemp(prefix="streamflow-pg-"))
    try:
        server = infra.start_postgres(base)
        yield server.dsn()
    finally:
        infra.stop_postgres(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def database_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A running single-node Kafka broker (host:port)."""
    base = Path(tempfile.mkdtemp(prefix="streamflow-kafka-"))
    server = None
    try:
        server = infra.start_kafka(base)
        yield server.bootstrap
    finally:
        if server is not None:
            infra.stop_pid(server.pid)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def flink_cluster() -> Iterator[infra.FlinkCluster]:
    """A Flink session cluster: one JobManager, two TaskManagers of two slots each."""
    base = Path(tempfile.mkdtemp(prefix="streamflow-flink-"))
    cluster = None
    try:
        # Flink's Prometheus reporter, as the operator sets it in production, on free ports (one
        # per process) so that tests/integration/test_monitoring_flink.py reads what it exports.
        ports = ",".join(str(infra.free_port()) for _ in range(3))
        reporter = {**METRICS_CONFIG, "metrics.reporter.prom.port": ports}
        cluster = infra.start_flink(base, taskmanagers=2, slots=2, extra=reporter)
        yield cluster
    finally:
        if cluster is not None:
            infra.stop_flink(cluster)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def streaming(
    postgres_server: str, kafka_bootstrap: str, flink_cluster: infra.FlinkCluster
) -> dict[str, Any]:
    """The infrastructure as `streamflow infra status --json` describes it, with a migrated
    warehouse database."""
    dsn = infra.ensure_database(postgres_server, "streamflow")
    return {
        "kafka": {"bootstrap": kafka_bootstrap},
        "postgres": {"dsn": dsn},
        "flink": infra.flink_state(flink_cluster),
    }
