"""The local infrastructure: a Kafka broker, a PostgreSQL server and a Flink session cluster.

Real components on 127.0.0.1, started by the project and cached after the first use:

- **Kafka** (KRaft, broker + controller in one JVM) from the Maven jars of ``kafka_2.13``;
- **PostgreSQL** from Debian's packages (``make postgres`` installs them), migrated;
- **Flink**: the distribution that ships inside the ``apache-flink`` wheel (its ``bin/`` and
  ``lib/``), run as a standalone session cluster: one JobManager and N TaskManager processes, plus
  the connector jars from Maven. Jobs are submitted with ``flink run -pym``, the same
  PythonDriver entry point the FlinkDeployments use (docs/adr/0015-local-flink-session-cluster.md).

``streamflow infra up|down|status``, the tests, ``streamflow live``, the demo and the benchmarks all
use this module. State lives under ``.infra/`` (``STREAMFLOW_INFRA_DIR``); ``.infra/state.json``
holds what ``streamflow infra status --json`` prints (a fixed interface: at least
``{"kafka": {"bootstrap": ...}, "postgres": {"dsn": ...}}``). Jars are cached under
``~/.cache/streamflow/`` by version, written under a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO / "config" / "versions.env"
# Used when the package runs outside a checkout (the versions file is not installed with it).
_DEFAULT_VERSIONS = {
    "KAFKA_VERSION": "4.1.1",
    "LOG4J_VERSION": "2.24.3",
    "FLINK_VERSION": "2.2.1",
    "FLINK_KAFKA_CONNECTOR_VERSION": "5.0.0-2.2",
    "FLINK_JDBC_CONNECTOR_VERSION": "4.0.0-2.0",
    "POSTGRESQL_JDBC_VERSION": "42.7.8",
}
DATABASE = "streamflow"
_HOST = "127.0.0.1"


class InfraError(RuntimeError):
    """Something the local infrastructure cannot do; the message is one line for the user."""


# --------------------------------------------------------------------------------------------
# versions, cache, ports
# --------------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    found = dict(_DEFAULT_VERSIONS)
    if VERSIONS_FILE.is_file():
        for line in VERSIONS_FILE.read_text("utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                found[key.strip()] = value.strip()
    return found


def cache_dir() -> Path:
    root = os.environ.get("STREAMFLOW_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "streamflow"


def infra_dir() -> Path:
    root = os.environ.get("STREAMFLOW_INFRA_DIR")
    return Path(root).resolve() if root else REPO / ".infra"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((_HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((_HOST, port)) == 0


def _wait_until(
    what: str,
    ready: Any,
    timeout: float,
    proc: subprocess.Popen[bytes] | None,
    log: Path | None = None,
) -> None:
    """Poll ``ready()`` (a cheap probe of a process we started) until true; fail early if the
    process died, naming its log."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise InfraError(f"{what} exited with code {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise InfraError(f"{what} not ready after {timeout:.0f} s; see {log}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _pom(coordinates: list[str]) -> str:
    deps = []
    for coordinate in coordinates:
        group, artifact, version = coordinate.split(":")
        deps.append(
            f"<dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version></dependency>"
        )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>dev.streamflow</groupId><artifactId>jars</artifactId><version>1</version>"
        f"<dependencies>{''.join(deps)}</dependencies></project>"
    )


def maven_jars(name: str, coordinates: list[str], *, transitive: bool) -> Path:
    """The jars of ``coordinates`` (``group:artifact:version``) in ``~/.cache/streamflow/<name>``,
    fetched once with Maven into a temporary directory and renamed into place."""
    target = cache_dir() / name
    if target.is_dir():
        return target
    if shutil.which("mvn") is None:
        raise InfraError("Maven (mvn) is needed once to fetch jars: apt-get install maven")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        (work / "pom.xml").write_text(_pom(coordinates), "utf-8")
        command = [
            "mvn", "-q", "-B", "-f", str(work / "pom.xml"),
            "dependency:copy-dependencies", f"-DoutputDirectory={work / 'jars'}",
            "-DincludeScope=runtime",
        ]  # fmt: skip
        if not transitive:
            command.append("-DexcludeTransitive=true")
        print(f"fetching {name} from Maven (once)", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            raise InfraError(f"mvn could not fetch {name}: {' / '.join(tail)}")
        with contextlib.suppress(OSError):  # a concurrent run got there first: keep its copy
            (work / "jars").rename(target)
        if not target.is_dir():
            raise InfraError(f"could not place {target}")
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def kafka_jars() -> Path:
    v = versions()
    return maven_jars(
        f"kafka-{v['KAFKA_VERSION']}",
        [
            f"org.apache.kafka:kafka_2.13:{v['KAFKA_VERSION']}",
            # Without a binding the broker logs nothing at all.
            f"org.apache.logging.log4j:log4j-slf4j-impl:{v['LOG4J_VERSION']}",
        ],
        transitive=True,
    )


def flink_connector_jars() -> list[Path]:
    """Kafka (the shaded ``sql-`` jar PyFlink's wrappers refer to), JDBC and the PostgreSQL
    driver, for Flink's ``lib/``."""
    v = versions()
    name = (
        f"flink-connectors-{v['FLINK_VERSION']}-kafka{v['FLINK_KAFKA_CONNECTOR_VERSION']}"
        f"-jdbc{v['FLINK_JDBC_CONNECTOR_VERSION']}-pg{v['POSTGRESQL_JDBC_VERSION']}"
    )
    jdbc = v["FLINK_JDBC_CONNECTOR_VERSION"]
    directory = maven_jars(
        name,
        [
            f"org.apache.flink:flink-sql-connector-kafka:{v['FLINK_KAFKA_CONNECTOR_VERSION']}",
            f"org.apache.flink:flink-connector-jdbc-core:{jdbc}",
            f"org.apache.flink:flink-connector-jdbc-postgres:{jdbc}",
            f"org.postgresql:postgresql:{v['POSTGRESQL_JDBC_VERSION']}",
        ],
        transitive=False,
    )
    return sorted(directory.glob("*.jar"))


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------
def _start(
    command: list[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,  # Ctrl-C in a terminal does not reach it: `down` stops it
        )


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process is dead for our purposes.
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().split(") ", 1)[1][:1] != "Z"
    return True


def stop_pid(pid: int | None, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Stop one process we started (and its process group): ``sig``, then SIGKILL."""
    if not pid_alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------------
@dataclass
class KafkaServer:
    base: Path
    port: int
    controller_port: int
    pid: int

    @property
    def bootstrap(self) -> str:
        return f"{_HOST}:{self.port}"


_KAFKA_LOG4J = """\
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def start_kafka(
    base: Path, port: int | None = None, controller_port: int | None = None, timeout: float = 90.0
) -> KafkaServer:
    """Format (once) and start a single-node KRaft broker+controller in ``base``."""
    libs = kafka_jars()
    port = port or free_port()
    controller_port = controller_port or free_port()
    base.mkdir(parents=True, exist_ok=True)
    data = base / "data"
    properties = base / "server.properties"
    properties.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{_HOST}:{controller_port}",
                f"listeners=PLAINTEXT://{_HOST}:{port},CONTROLLER://{_HOST}:{controller_port}",
                f"advertised.listeners=PLAINTEXT://{_HOST}:{port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={data}",
                "num.partitions=3",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=1",
                # Flink's KafkaSink asks for transaction timeouts up to an hour.
                "transaction.max.timeout.ms=3600000",
                "group.initial.rebalance.delay.ms=0",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "",
            ]
        ),
        "utf-8",
    )
    (base / "log4j2.properties").write_text(_KAFKA_LOG4J, "utf-8")
    classpath = f"{libs}/*"
    if not (data / "meta.properties").is_file():
        cluster_id = _kafka_cluster_id(base)
        done = subprocess.run(
            ["java", "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id,
             "-c", str(properties), "--ignore-formatted"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode:
            raise InfraError(f"kafka storage format failed: {done.stderr.strip()[-300:]}")
    log = base / "kafka.log"
    proc = _start(
        ["java", "-Xms256m", "-Xmx512m", "-XX:+UseG1GC",
         f"-Dlog4j2.configurationFile={base / 'log4j2.properties'}",
         "-cp", classpath, "kafka.Kafka", str(properties)],
        log,
    )  # fmt: skip
    server = KafkaServer(base, port, controller_port, proc.pid)
    _wait_until("kafka", lambda: _kafka_ready(server.bootstrap), timeout, proc, log)
    return server


def _kafka_cluster_id(base: Path) -> str:
    path = base / "cluster.id"
    if not path.is_file():
        # KRaft wants a base64 UUID of 22 characters. One starting with "-" would be read as an
        # option by the storage tool: drawn again, as Kafka's own Uuid.randomUuid() does.
        import base64  # noqa: PLC0415

        cluster_id = "-"
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
        path.write_text(cluster_id, "utf-8")
    return path.read_text("utf-8").strip()


def _kafka_ready(bootstrap: str) -> bool:
    port = bootstrap.rsplit(":", 1)[1]
    if not _port_open(int(port)):
        return False
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=2)
    except Exception:
        return False
    return True


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    config: Mapping[str, Mapping[str, str]] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create ``{name: partitions}`` (replication 1); an existing topic is left as it is."""
    from confluent_kafka import KafkaException  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415
    from confluent_kafka.cimpl import NewTopic  # noqa: PLC0415

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(name, num_partitions=n, replication_factor=1,
                     config=dict((config or {}).get(name, {})))
            for name, n in topics.items()
        ],
        operation_timeout=timeout,
    )  # fmt: skip
    for name, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise InfraError(f"cannot create topic {name}: {exc.args[0].str()}") from exc


def delete_topics(bootstrap: str, names: list[str], timeout: float = 30.0) -> None:
    """Delete topics this code created (a run's own); a missing topic is fine."""
    from confluent_kafka import KafkaException  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for name, future in admin.delete_topics(names, operation_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "UNKNOWN_TOPIC_OR_PART":
                raise InfraError(f"cannot delete topic {name}: {exc.args[0].str()}") from exc


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------
@dataclass
class PostgresServer:
    base: Path
    port: int
    password: str

    @property
    def data(self) -> Path:
        return self.base / "data"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://streamflow:{self.password}@{_HOST}:{self.port}/{database}"


def postgres_bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise InfraError("PostgreSQL is not installed: `make postgres` installs Debian's")
    return found[-1].parent


def _as_postgres() -> list[str]:
    # As root, PostgreSQL refuses to run: it runs as the `postgres` user Debian created.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres")


def start_postgres(
    base: Path, port: int | None = None, password: str | None = None, timeout: float = 60.0
) -> PostgresServer:
    """initdb (once) into ``base/data`` and start on 127.0.0.1 with password authentication."""
    bin_dir = postgres_bin_dir()
    base.mkdir(parents=True, exist_ok=True)
    _own(base)
    sockets, pwfile = base / "sock", base / "pw"
    sockets.mkdir(exist_ok=True)
    _own(sockets)
    if password is None:
        password = pwfile.read_text("utf-8") if pwfile.is_file() else secrets.token_urlsafe(16)
    if not pwfile.is_file():
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
        _own(pwfile)
    server = PostgresServer(base, port or free_port(), password)

    def run(*args: str) -> None:
        done = subprocess.run([*_as_postgres(), *args], capture_output=True, text=True,
                              cwd=base, check=False)  # fmt: skip
        if done.returncode:
            raise InfraError(f"{Path(args[0]).name} failed: {done.stderr.strip()[-300:]}")

    if not (server.data / "PG_VERSION").is_file():
        run(
            str(bin_dir / "initdb"), "-D", str(server.data), "-U", "streamflow",
            "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
    options = (
        f"-p {server.port} -k {sockets} -c listen_addresses={_HOST} -c fsync=off "
        "-c synchronous_commit=off -c max_connections=200"
    )
    run(str(bin_dir / "pg_ctl"), "-D", str(server.data), "-o", options, "-l",
        str(base / "postgres.log"), "-t", str(int(timeout)), "-w", "start")  # fmt: skip
    return server


def stop_postgres(base: Path) -> None:
    data = base / "data"
    if (data / "postmaster.pid").is_file():
        subprocess.run(
            [*_as_postgres(), str(postgres_bin_dir() / "pg_ctl"), "-D", str(data), "-m", "fast",
             "-w", "stop"],
            capture_output=True, check=False,
        )  # fmt: skip


def ensure_database(server_dsn: str, name: str) -> str:
    """Create database ``name`` if missing and apply the warehouse migrations; return its DSN."""
    import psycopg  # noqa: PLC0415

    from streamflow_jobs.migrate import discover, migrate  # noqa: PLC0415

    with psycopg.connect(server_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    dsn = server_dsn.rsplit("/", 1)[0] + f"/{name}"
    migrate(dsn, discover())
    return dsn


# --------------------------------------------------------------------------------------------
# Flink
# --------------------------------------------------------------------------------------------
def flink_home() -> Path:
    """The Flink distribution inside the apache-flink wheel (bin/, lib/, opt/)."""
    import pyflink  # noqa: PLC0415

    return Path(pyflink.__file__).parent


def python_path() -> str:
    """What thread mode's embedded interpreter needs on PYTHONPATH: it reads no .pth file, so
    the project's sources and the environment's site-packages (else: no module 'pemja')."""
    import sysconfig  # noqa: PLC0415

    return os.pathsep.join([str(REPO / "jobs"), sysconfig.get_paths()["purelib"]])


@dataclass
class FlinkCluster:
    base: Path
    rest_port: int
    jobmanager_pid: int
    taskmanager_pids: list[int]
    slots: int

    @property
    def rest(self) -> str:
        return f"http://{_HOST}:{self.rest_port}"

    @property
    def conf_dir(self) -> Path:
        return self.base / "conf"

    def env(self) -> dict[str, str]:
        """Environment for Flink's scripts (cluster processes and the `flink` client)."""
        return {
            "FLINK_HOME": str(flink_home()),
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LIB_DIR": str(self.base / "lib"),
            "FLINK_LOG_DIR": str(self.base / "log"),
            "PYTHONPATH": python_path(),
            "PYFLINK_CLIENT_EXECUTABLE": sys.executable,
        }

    def start_taskmanager(self) -> int:
        """Start one more TaskManager process (e.g. after one was killed); return its pid."""
        n = len(self.taskmanager_pids)
        log = self.base / "log" / f"taskmanager-{n}.out"
        proc = _start(
            [
                str(flink_home() / "bin" / "taskmanager.sh"),
                "start-foreground",
                f"-Dtaskmanager.resource-id=tm{n}",
            ],
            log,
            env={**self.env(), "FLINK_IDENT_STRING": f"tm{n}"},  # one log file per process
        )
        self.taskmanager_pids.append(proc.pid)
        return proc.pid

    def taskmanager_pid(self, resource_id: str) -> int:
        """The process of TaskManager ``tm<n>`` (its resource id, as Flink's REST API shows)."""
        return self.taskmanager_pids[int(resource_id.removeprefix("tm"))]

    def overview(self) -> dict[str, Any]:
        overview: dict[str, Any] = rest_json(f"{self.rest}/overview")
        return overview

    def wait_taskmanagers(self, count: int, timeout: float = 120.0) -> None:
        def ready() -> bool:
            try:
                return int(self.overview().get("taskmanagers", 0)) >= count
            except (OSError, ValueError):
                return False

        _wait_until(f"{count} Flink TaskManager(s)", ready, timeout, None, self.base / "log")


def rest_json(url: str, method: str = "GET", body: Any = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read()
    return json.loads(text) if text else {}


def _flink_config(base: Path, rest_port: int, slots: int, extra: Mapping[str, str]) -> str:
    ports = {"rpc": free_port(), "blob": free_port()}
    config: dict[str, str] = {
        "jobmanager.rpc.address": _HOST,
        "jobmanager.rpc.port": str(ports["rpc"]),
        "jobmanager.bind-host": _HOST,
        "jobmanager.memory.process.size": "1024m",
        "jobmanager.execution.failover-strategy": "region",
        "taskmanager.host": _HOST,
        "taskmanager.bind-host": _HOST,
        "taskmanager.numberOfTaskSlots": str(slots),
        "taskmanager.memory.process.size": "1600m",
        # Thread mode runs Python inside the TaskManager: give the JVM heap room for it.
        "taskmanager.memory.managed.fraction": "0.2",
        "taskmanager.rpc.port": "0",
        "taskmanager.data.port": "0",
        "blob.server.port": str(ports["blob"]),
        "rest.address": _HOST,
        "rest.bind-address": _HOST,
        "rest.port": str(rest_port),
        "parallelism.default": "1",
        "state.backend.type": "rocksdb",
        "execution.checkpointing.incremental": "true",
        "execution.checkpointing.dir": (base / "checkpoints").as_uri(),
        "execution.checkpointing.savepoint-dir": (base / "savepoints").as_uri(),
        "execution.checkpointing.num-retained": "2",
        # Working directories (RocksDB's local files, blobs) under this cluster's base: by
        # default they are /tmp/tm_<resource id>, the same "tm0" path for every local
        # cluster on the machine, and a cluster that stops deletes the RocksDB files of
        # another one still running (seen: "While mkdir: /tmp/tm_tm0/...: No such file").
        "io.tmp.dirs": str(base / "tmp"),
        # A test that kills a TaskManager expects the job back from its checkpoint.
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "20",
        "restart-strategy.fixed-delay.delay": "1 s",
        "heartbeat.timeout": "15000",
        "heartbeat.interval": "2000",
        "metrics.fetcher.update-interval": "1000",
        "web.checkpoints.history": "100",
        "classloader.parent-first-patterns.additional": "pemja.;org.apache.flink.python.",
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        # The JVM flags Flink's own configuration ships with (module opens for Java 17).
        "env.java.opts.all": _wheel_java_opts(),
        **extra,
    }
    # Flink 2 reads a flat `key: value` YAML as well as a nested one.
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in sorted(config.items()))


def _wheel_java_opts() -> str:
    import yaml  # noqa: PLC0415

    shipped = yaml.safe_load((flink_home() / "conf" / "config.yaml").read_text("utf-8")) or {}
    opts: str = shipped.get("env", {}).get("java", {}).get("opts", {}).get("all", "")
    return opts


def start_flink(
    base: Path,
    rest_port: int | None = None,
    taskmanagers: int = 1,
    slots: int = 1,
    extra: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> FlinkCluster:
    """A standalone session cluster from the wheel's Flink: one JobManager, ``taskmanagers``
    TaskManager processes of ``slots`` slots each; connector jars on every classpath."""
    home = flink_home()
    base.mkdir(parents=True, exist_ok=True)
    conf, lib = base / "conf", base / "lib"
    for directory in (conf, lib, base / "log", base / "tmp", base / "checkpoints",
                      base / "savepoints"):  # fmt: skip
        directory.mkdir(exist_ok=True)
    # lib/: the wheel's jars and the connectors, as links (FLINK_LIB_DIR replaces lib/ whole).
    # flink-python in lib/ too (as Flink's PyFlink images do): loaded once by the parent
    # classloader, so pemja's native library serves every job on a TaskManager. From a job's
    # own classloader, the second Python job on a TaskManager fails ("loadedLibraryNames").
    jars = [
        *sorted((home / "lib").glob("*.jar")),
        *sorted((home / "opt").glob("flink-python-*.jar")),
        *flink_connector_jars(),
    ]
    wanted = {p.name: p for p in jars}
    for stale in lib.iterdir():
        if stale.name not in wanted or stale.resolve() != wanted[stale.name].resolve():
            stale.unlink()
    for name, path in wanted.items():
        if not (lib / name).exists():
            (lib / name).symlink_to(path)
    rest_port = rest_port or free_port()
    (conf / "config.yaml").write_text(_flink_config(base, rest_port, slots, extra or {}), "utf-8")
    for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties"):
        shutil.copyfile(home / "conf" / name, conf / name)
    cluster = FlinkCluster(base, rest_port, 0, [], slots)
    jm = _start([str(home / "bin" / "jobmanager.sh"), "start-foreground"],
                base / "log" / "jobmanager.out", env=cluster.env())  # fmt: skip
    cluster.jobmanager_pid = jm.pid
    for _ in range(taskmanagers):
        cluster.start_taskmanager()
    _wait_until("the Flink JobManager", lambda: _port_open(rest_port), timeout, jm,
                base / "log" / "jobmanager.out")  # fmt: skip
    cluster.wait_taskmanagers(taskmanagers, timeout)
    return cluster


def stop_flink(cluster: FlinkCluster) -> None:
    for pid in cluster.taskmanager_pids:
        stop_pid(pid)
    stop_pid(cluster.jobmanager_pid)


# --------------------------------------------------------------------------------------------
# `streamflow infra up | down | status`: the developer's instance under .infra/
# --------------------------------------------------------------------------------------------
def state_path() -> Path:
    return infra_dir() / "state.json"


def read_state() -> dict[str, Any] | None:
    path = state_path()
    if not path.is_file():
        return None
    try:
        state: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return state


def write_state(state: dict[str, Any]) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds a password
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
        f.write("\n")
    tmp.replace(path)


def component_status(state: Mapping[str, Any]) -> dict[str, bool]:
    """Which recorded components are running now (process alive and port answering)."""
    kafka, pg, flink = state.get("kafka", {}), state.get("postgres", {}), state.get("flink", {})
    return {
        "kafka": pid_alive(kafka.get("pid")) and _port_open(int(kafka.get("port", 0) or 0)),
        "postgres": _port_open(int(pg.get("port", 0) or 0))
        and (Path(pg.get("base", "/nonexistent")) / "data" / "postmaster.pid").is_file(),
        "flink": pid_alive(flink.get("jobmanager_pid"))
        and _port_open(int(flink.get("rest_port", 0) or 0)),
    }


def status() -> dict[str, Any]:
    """The recorded state with a ``running`` flag per component (empty when never started)."""
    state = read_state()
    if state is None:
        return {"running": False}
    running = component_status(state)
    for name, up in running.items():
        if name in state:
            state[name]["running"] = up
    state["running"] = all(running.values())
    return state


def up(taskmanagers: int = 1, slots: int = 1) -> dict[str, Any]:
    """Start whatever is not running (a second `up` is a no-op); return the state."""
    base = infra_dir()
    base.mkdir(parents=True, exist_ok=True)
    previous = read_state() or {}
    running = component_status(previous) if previous else {}
    state: dict[str, Any] = {"version": 1, "base": str(base)}

    old = previous.get("kafka", {})
    if running.get("kafka"):
        state["kafka"] = old
    else:
        stop_pid(old.get("pid"))
        port = old.get("port") if old.get("port") and not _port_open(old["port"]) else None
        cport = old.get("controller_port")
        cport = cport if cport and not _port_open(cport) else None
        k = start_kafka(base / "kafka", port, cport)
        state["kafka"] = {"bootstrap": k.bootstrap, "port": k.port,
                          "controller_port": k.controller_port, "pid": k.pid}  # fmt: skip
    write_state({**previous, **state})

    old = previous.get("postgres", {})
    if running.get("postgres"):
        state["postgres"] = old
    else:
        port = old.get("port") if old.get("port") and not _port_open(old["port"]) else None
        pg = start_postgres(base / "postgres", port)
        dsn = ensure_database(pg.dsn(), DATABASE)
        state["postgres"] = {"dsn": dsn, "port": pg.port, "base": str(pg.base),
                             "database": DATABASE}  # fmt: skip
    write_state({**previous, **state})

    old = previous.get("flink", {})
    code = code_digest()
    if running.get("flink") and old.get("code") == code:
        state["flink"] = old
    else:
        if running.get("flink"):
            # A TaskManager's embedded Python keeps the modules it imported: new job code
            # needs new TaskManagers (docs/adr/0015).
            print("the jobs' code changed: restarting the Flink cluster", file=sys.stderr)
        for pid in old.get("taskmanager_pids", []):
            stop_pid(pid)
        stop_pid(old.get("jobmanager_pid"))
        port = (
            old.get("rest_port")
            if old.get("rest_port") and not _port_open(old["rest_port"])
            else None
        )
        f = start_flink(base / "flink", port, taskmanagers=taskmanagers, slots=slots)
        state["flink"] = {**flink_state(f), "code": code}
    write_state(state)
    return status()


def code_digest() -> str:
    """A digest of the jobs' code (sources, compiled modules, the shipped model): a cluster
    started for other code must be restarted before it runs these jobs."""
    digest = hashlib.sha256()
    root = REPO / "jobs" / "streamflow_jobs"
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".so", ".json") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def flink_state(f: FlinkCluster) -> dict[str, Any]:
    return {"rest": f.rest, "rest_port": f.rest_port, "jobmanager_pid": f.jobmanager_pid,
            "taskmanager_pids": f.taskmanager_pids, "slots": f.slots,
            "base": str(f.base)}  # fmt: skip


def flink_cluster(state: Mapping[str, Any] | None = None) -> FlinkCluster:
    """The recorded Flink cluster of ``.infra/`` (after `up`)."""
    f = (state or read_state() or {}).get("flink")
    if not f:
        raise InfraError("the local infrastructure is not running: `streamflow infra up`")
    return FlinkCluster(Path(f["base"]), f["rest_port"], f["jobmanager_pid"],
                        list(f["taskmanager_pids"]), f["slots"])  # fmt: skip


def down() -> dict[str, Any]:
    """Stop everything `up` started (data stays under .infra/ for the next `up`)."""
    state = read_state()
    if state is None:
        return {"running": False}
    flink = state.get("flink")
    if flink:
        stop_flink(flink_cluster(state))
    stop_pid(state.get("kafka", {}).get("pid"))
    pg = state.get("postgres")
    if pg:
        stop_postgres(Path(pg["base"]))
    return status()


def postgres_dsn() -> str:
    """The DSN of the local warehouse database (``streamflow infra up`` first)."""
    return _running_value("postgres", "dsn")


def kafka_bootstrap() -> str:
    return _running_value("kafka", "bootstrap")


def _running_value(component: str, key: str) -> str:
    """One address from the state file; a missing or mangled file means nothing runs."""
    state = read_state()
    part = state.get(component) if isinstance(state, dict) else None
    value = part.get(key) if isinstance(part, dict) else None
    if not isinstance(value, str) or not value:
        raise InfraError("the local infrastructure is not running: `streamflow infra up`")
    return value


@contextlib.contextmanager
def running() -> Iterator[dict[str, Any]]:
    """Use the local infrastructure, starting it if needed; stop only what this call started."""
    before = status()
    started_here = not before.get("running")
    stale = before.get("flink", {}).get("code") != code_digest()
    state = up() if started_here or stale else before
    try:
        yield state
    finally:
        if started_here:
            down()
