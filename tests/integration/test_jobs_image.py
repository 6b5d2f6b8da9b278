"""The jobs image (`make images`) runs the fraud-detector the way its FlinkDeployment declares
it: the renderer's entry class, jar and ``-pym`` arguments, the rules and model at the mount
paths of its pod template, the database from the same environment variable; a JobManager and a
TaskManager container of that image, against the session's Kafka and PostgreSQL. The alerts
(on the alerts topic and in bronze) are exactly those of the core's own per-event loop.

What differs from a cluster, and why: the Flink Kubernetes Operator's native deployment becomes
Flink's standalone application mode (the same PythonDriver program in the JobManager, no
Kubernetes API); ports are free ones of this shared host (host network); checkpoints go to a
shared directory instead of S3, every second (alerts are transactional: they appear at a
checkpoint); parallelism 1; no restarts (a failure fails the test).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from streamflow_jobs import infra
from streamflow_jobs.detector import Detector
from streamflow_jobs.flink.args import parse_args
from streamflow_jobs.live import committed_lag
from streamflow_jobs.model.forest import DEFAULT_MODEL_PATH
from streamflow_jobs.model.loader import load_model
from streamflow_jobs.rules.config import RulesConfig
from streamflow_operator.reconcile import render_offline
from tests.e2e.conftest import free_port, wait_for
from tests.images.containers import PODMAN, ROOT, UIDS, failure, image, podman, running
from tests.integration.test_streaming import alerts_of, by_id, generated, produce, reference

pytestmark = pytest.mark.integration
FLINK_CONF = Path(infra.flink_home()) / "conf"


def rendered(name: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The sample pipeline's children as the operator renders them (built-in model, no shadow),
    by kind and name."""
    doc = yaml.safe_load((ROOT / "config/samples/fraudpipeline.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": "it"}
    doc["spec"]["model"] = {}
    doc["spec"].pop("shadow", None)
    return {
        (c["kind"], c["metadata"]["name"]): c
        for c in yaml.safe_load_all(render_offline(yaml.safe_dump(doc)))
    }


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flink's nested YAML configuration as flat keys (``a.b.c: value``)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def flink_conf(directory: Path, base: dict[str, Any], prom: int) -> Path:
    """A Flink configuration directory as the operator mounts one (config.yaml + log4j), with
    this process's Prometheus reporter port."""
    directory.mkdir()
    config = {**base, "metrics.reporter.prom.port": str(prom)}
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    log4j = (FLINK_CONF / "log4j-console.properties").read_text()
    (directory / "log4j-console.properties").write_text(log4j)
    return directory


def bronze_alerts(dsn: str, topic: str) -> tuple[int, int]:
    """(distinct transactions, rows) of bronze.fraud_alerts from ``topic``."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT transaction_id), count(*) FROM bronze.fraud_alerts"
            " WHERE kafka_topic = %s",
            (topic,),
        ).fetchone()
    return (row[0], row[1]) if row else (0, 0)


def fetch(url: str) -> str:
    """The body at ``url``; empty while nothing answers there yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def test_the_jobs_image_runs_the_rendered_fraud_detector(
    postgres_server: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    ref = image("jobs")
    name = f"img{uuid.uuid4().hex[:8]}"  # the pipeline: its topics, group and database
    children = rendered(name)
    deployment = children[("FlinkDeployment", f"{name}-fraud-detector")]
    spec = deployment["spec"]
    job = spec["job"]
    template = spec["podTemplate"]["spec"]["containers"][0]
    (dsn_env,) = (e["name"] for e in template["env"])
    mounts = {m["name"]: m["mountPath"] for m in template["volumeMounts"]}
    pod_volumes = spec["podTemplate"]["spec"]["volumes"]
    volumes = {v["name"]: v["configMap"]["name"] for v in pod_volumes if "configMap" in v}
    # Scratch space as the pod has it (emptyDirs): /tmp and the log directory, below.
    scratch = {mounts[v["name"]] for v in pod_volumes if "emptyDir" in v}
    assert scratch == {"/tmp", "/opt/flink/log"}

    # The pod's volumes: the rules ConfigMap as rendered, the built-in model (its copy).
    rules = tmp_path / "rules"
    rules.mkdir()
    for key, value in children[("ConfigMap", volumes["rules"])]["data"].items():
        (rules / key).write_text(value)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_bytes(DEFAULT_MODEL_PATH.read_bytes())
    state, jm_log, tm_log = tmp_path / "state", tmp_path / "jm-log", tmp_path / "tm-log"
    for writable in (state, jm_log, tm_log):  # the pod's volumes the image's user writes
        writable.mkdir()
        os.chown(writable, UIDS["jobs"], UIDS["jobs"])
    for path in (tmp_path, rules, model, *rules.iterdir(), *model.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)

    # The database: migrated by the migrations Job's own command, in this image.
    dsn = infra.ensure_database(postgres_server, f"{name}")
    (migrations,) = (c for (kind, _), c in children.items() if kind == "Job")
    pod = migrations["spec"]["template"]["spec"]["containers"][0]
    (url_env,) = (e["name"] for e in pod["env"] if e["name"] == "DATABASE_URL")
    migrate = subprocess.run(
        [str(PODMAN), "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp",
         "-e", f"{url_env}={dsn}", "--entrypoint", pod["command"][0], ref,
         *pod["command"][1:]],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    assert "up to date" in migrate.stdout  # ensure_database applied them: the same migrations

    # The job's arguments as rendered, with this session's broker (its topic names kept).
    argv = job["args"]
    module_at = argv.index("-pym") + 2
    args = dataclasses.replace(parse_args(argv[module_at:]), bootstrap_servers=kafka_bootstrap)
    topics = [args.transactions_topic, args.alerts_topic, args.dead_letter_topic]
    infra.create_topics(
        kafka_bootstrap,
        {**dict.fromkeys(topics, 3), args.control_topic: 1},
        config={args.control_topic: {"cleanup.policy": "compact"}},
    )
    program = [*argv[:module_at], *args.to_argv()]

    ports = {
        k: free_port() for k in ("rest", "rpc", "blob", "tm_rpc", "tm_data", "jm_prom", "tm_prom")
    }
    # As the Flink operator does: the distribution's default configuration (Java 17's
    # --add-opens among it), then the FlinkDeployment's flinkConfiguration, then this host's.
    base = flat(yaml.safe_load((FLINK_CONF / "config.yaml").read_text()))
    base.update(spec["flinkConfiguration"])
    base.update(
        {
            "execution.checkpointing.dir": f"file://{state}/checkpoints",
            "execution.checkpointing.savepoint-dir": f"file://{state}/savepoints",
            "execution.checkpointing.interval": "1s",
            "restart-strategy.type": "none",
            "parallelism.default": "1",
            "taskmanager.numberOfTaskSlots": "1",
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.rpc.port": str(ports["rpc"]),
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": str(ports["rest"]),
            "blob.server.port": str(ports["blob"]),
            "taskmanager.host": "127.0.0.1",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.rpc.port": str(ports["tm_rpc"]),
            "taskmanager.data.port": str(ports["tm_data"]),
            "jobmanager.memory.process.size": "1024m",
            "taskmanager.memory.process.size": "1536m",
            "metrics.reporter.prom.factory.class": (
                "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
            ),
        }
    )
    pod = [
        *("-v", f"{rules}:{mounts['rules']}:ro", "-v", f"{model}:{mounts['model']}:ro"),
        *("-v", f"{state}:{state}", "-e", f"{dsn_env}={dsn}"),
    ]
    jm_conf = flink_conf(tmp_path / "jm-conf", base, prom=ports["jm_prom"])
    tm_conf = flink_conf(tmp_path / "tm-conf", base, prom=ports["tm_prom"])
    jm_pod = [*pod, "-v", f"{jm_conf}:/opt/flink/conf:ro", "-v", f"{jm_log}:/opt/flink/log"]
    tm_pod = [*pod, "-v", f"{tm_conf}:/opt/flink/conf:ro", "-v", f"{tm_log}:/opt/flink/log"]
    # Flink's standalone application mode: the FlinkDeployment's jar, entry class and arguments.
    jobmanager = ["standalone-job.sh", "start-foreground", "--jars", job["jarURI"]]
    jobmanager += ["--job-classname", job["entryClass"], *program]
    taskmanager = ["taskmanager.sh", "start-foreground"]
    lines = generated(1500, seed=41, customers=80)
    with running(ref, jobmanager, jm_pod) as jm, running(ref, taskmanager, tm_pod) as tm:

        def alive() -> None:
            for container in (jm, tm):
                status = podman("inspect", "--format", "{{.State.Status}}", container).strip()
                if status != "running":  # pytest.fail: not retried by wait_for
                    pytest.fail(f"{container} {status}:\n{failure(container)}")

        def job_running() -> bool:
            alive()
            overview = json.loads(fetch(f"http://127.0.0.1:{ports['rest']}/jobs/overview") or "{}")
            return any(j["state"] == "RUNNING" for j in overview.get("jobs", []))

        wait_for(job_running, timeout=240, interval=1, what="the fraud-detector RUNNING")
        produce(kafka_bootstrap, args.transactions_topic, lines)
        detector = Detector(
            RulesConfig.from_yaml(rules / "rules.yaml"), load_model(model / "model.json")
        )
        expected = by_id(reference(lines, [(0, detector)]))
        assert expected, "the generated events raise alerts"

        def caught_up() -> bool:
            alive()
            return (
                committed_lag(
                    kafka_bootstrap, args.group("fraud-detector"), args.transactions_topic
                )
                == 0
            )

        wait_for(caught_up, timeout=240, interval=1, what="the job's offsets past every event")
        wait_for(
            lambda: by_id(alerts_of(kafka_bootstrap, args.alerts_topic)) == expected,
            timeout=60,
            interval=1,
            what="the alerts",
        )
        # ... and into bronze through the image's JDBC connector and PostgreSQL driver.
        wait_for(
            lambda: bronze_alerts(dsn, args.transactions_topic) == (len(expected),) * 2,
            timeout=60,
            interval=1,
            what="the alerts in bronze.fraud_alerts",
        )
        # Flink's Prometheus reporter (the plugin the image ships) serves the JobManager's.
        scraped = fetch(f"http://127.0.0.1:{ports['jm_prom']}/metrics")
        running_jobs = [
            line.rsplit(" ", 1)[1]
            for line in scraped.splitlines()
            if line.startswith("flink_jobmanager_numRunningJobs{")
        ]
        assert running_jobs == ["1.0"], scraped[-1000:]
