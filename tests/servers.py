"""Real servers for tests and benchmarks, started on 127.0.0.1 in a private folder.

Mosquitto comes from the Debian package (``infra/local/install-services.sh``), Kafka from the
Maven Central jars that ``infra/local/kafka.sh`` fetches. Readiness is a condition (the port
accepts an MQTT CONNECT; the broker lists itself in a Kafka Metadata response), never a fixed
sleep.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``Popen`` in a process group of its own, so that :func:`stop_process` (and a test's
    teardown, whatever failed) reaches everything it started."""
    process: subprocess.Popen[bytes] = subprocess.Popen(argv, start_new_session=True,
                                                        **kwargs)
    _GROUP_LEADERS.add(process.pid)
    return process


_GROUP_LEADERS: set[int] = set()
"""Pids of the processes :func:`spawn` started, each the leader of its process group."""


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and, if :func:`spawn` started it, whatever is left of its group
    (anything it started), even once it has exited itself."""
    if process.pid in _GROUP_LEADERS:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        _GROUP_LEADERS.discard(process.pid)
    elif process.poll() is None:
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)


def stop_process(process: subprocess.Popen[bytes], *, timeout_s: float,
                 sig: signal.Signals = signal.SIGTERM) -> None:
    """``sig`` (SIGTERM), then SIGKILL if it has not exited within ``timeout_s``; then SIGKILL
    to what is left of its process group, if it has one of its own (:func:`spawn`)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)  # a paused server cannot handle ``sig``
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
    kill_group(process)


def pause(process: subprocess.Popen[bytes] | None) -> None:
    """SIGSTOP: a server that hangs (accepts nothing, answers nothing, closes nothing)."""
    if process is not None and process.poll() is None:
        os.kill(process.pid, signal.SIGSTOP)


def resume(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], *, timeout_s: float, what: str,
               poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in MOSQUITTO_PATHS if Path(p).exists()), None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed: run infra/local/install-services.sh")
    return found


def _mqtt_connack(port: int) -> bool:
    """True when the broker answers an MQTT 3.1.1 CONNECT with a CONNACK."""
    connect = bytes([0x10, 0x12, 0x00, 0x04]) + b"MQTT" + bytes([0x04, 0x02, 0x00, 0x0A,
                                                                 0x00, 0x06]) + b"probe1"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(connect)
            return s.recv(4)[:1] == b"\x20"
    except OSError:
        return False


@dataclass
class Mosquitto:
    """A private Mosquitto with a persistent store and queues sized for bursts."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    max_inflight_messages: int = 1000
    """Unacknowledged messages in flight to one client. A subscriber that acknowledges once
    stored takes at most this many per store round trip (the benchmarks use the 10,000 of
    docs/operations.md; tests keep 1,000 so that a few thousand messages test the flow)."""

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # Run as whoever started the tests (as root, mosquitto would switch to a
            # 'mosquitto' user that cannot write our private folder).
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            # Offline and slow persistent sessions keep everything: SEMS bounds its own memory
            # by pausing its socket reads (connectors/mqtt.py), so the
            # broker is where a burst waits.
            "max_queued_messages 0\n"
            "max_queued_bytes 0\n"
            f"max_inflight_messages {self.max_inflight_messages}\n"
            "persistent_client_expiration 1d\n"
            "set_tcp_nodelay true\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        return conf

    def start(self) -> Mosquitto:
        conf = self.write_config()
        self.process = spawn(
            [mosquitto_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait_until(lambda: self._alive() and _mqtt_connack(self.port), timeout_s=15,
                   what=f"mosquitto on port {self.port}")
        return self

    def _alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise RuntimeError(f"mosquitto exited; log:\n{log}")
        return True

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout_s=15)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """Hang the broker (SIGSTOP) until :meth:`resume` (or a stop)."""
        pause(self.process)

    def resume(self) -> None:
        resume(self.process)

    def dropped_messages_logged(self) -> bool:
        return "Outgoing messages are being dropped" in self.log_path.read_text()


# --- Apache Kafka ------------------------------------------------------------------------------
# A single-node KRaft broker (broker and controller in one JVM) from the Maven Central jars that
# infra/local/kafka.sh fetches once into .cache/kafka/libs. The script also writes the broker's
# configuration and formats its storage, so the tests and `kafka.sh start` run the same broker.

KAFKA_SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "local" / "kafka.sh"
_METADATA_API_KEY = 3
_METADATA_VERSION = 4  # Kafka 4.1 serves v0-v13; v4 predates the flexible (v9+) encoding


@functools.cache
def install_kafka() -> None:
    """Fetch the broker's jars, once per test session (the script skips them when cached)."""
    subprocess.run(["bash", str(KAFKA_SCRIPT), "install"], check=True)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        data += chunk
    return data


def kafka_broker_count(port: int) -> int:
    """Brokers a Metadata request on ``port`` lists; 0 when the port does not answer.

    A KRaft broker lists only unfenced brokers, so a count of 1 means the broker has caught up
    with its metadata log and will accept topic creation and produce requests.
    """
    client_id = b"sems-probe"
    request = (struct.pack(">hhih", _METADATA_API_KEY, _METADATA_VERSION, 1, len(client_id))
               + client_id
               + struct.pack(">i?", -1, False))  # all topics (null array); no auto-creation
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exactly(s, 4))
            # Response v4: correlation id, throttle time, then the brokers array's length.
            _correlation, _throttle_ms, brokers = struct.unpack(">iii", _recv_exactly(s, 12))
            _recv_exactly(s, size - 12)
    except (OSError, struct.error):
        return 0
    return int(brokers)


@dataclass
class Kafka:
    """A private single-node Kafka broker on 127.0.0.1 that a test can stop, kill and restart.

    Restarts keep the data folder and both ports, so clients reconnect to the same address and
    find their topics and committed offsets again.
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        while self.controller_port == self.port:
            self.controller_port = free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kafka.log"

    def start(self, *, timeout_s: float = 90) -> Kafka:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"kafka on {self.bootstrap} is already running")
        install_kafka()
        self.workdir.mkdir(parents=True, exist_ok=True)
        # `kafka.sh run` configures, formats the storage once, then execs java: the Popen's
        # pid is the broker's own, so kill() reaches the JVM and not a wrapping shell.
        with (self.workdir / "kafka.out").open("ab") as out:
            self.process = spawn(
                ["bash", str(KAFKA_SCRIPT), "run", str(self.workdir), str(self.port),
                 str(self.controller_port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            wait_until(lambda: self._alive() and kafka_broker_count(self.port) > 0,
                       timeout_s=timeout_s, what=f"kafka on {self.bootstrap}", poll_s=0.1)
        except BaseException:
            self.kill()  # a broker that never became ready would outlive the failed fixture
            raise
        return self

    def _alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            tails = [f"{p.name}:\n{p.read_text(errors='replace')[-4000:]}"
                     for p in (self.workdir / "kafka.out", self.log_path) if p.exists()]
            raise RuntimeError("kafka exited; " + "\n".join(tails))
        return True

    def stop(self, *, timeout_s: float = 60) -> None:
        """A clean shutdown (SIGTERM): the broker flushes and closes its logs."""
        if self.process is not None:
            stop_process(self.process, timeout_s=timeout_s)
        self.process = None

    def kill(self) -> None:
        """A crash (SIGKILL): no flush, no controlled shutdown."""
        if self.process is not None:
            kill_group(self.process)
        self.process = None

    def pause(self) -> None:
        """Hang the broker (SIGSTOP) until :meth:`resume` (or a stop)."""
        pause(self.process)

    def resume(self) -> None:
        resume(self.process)

    def restart(self, *, timeout_s: float = 90) -> Kafka:
        self.stop()
        return self.start(timeout_s=timeout_s)


# --- Production stores: InfluxDB 2.7, PostgreSQL 15, Redis 7 -------------------------------------
# Each is run by its project script's `run` mode (infra/local/*.sh), which execs the server in
# the foreground, so the Popen's pid is the server's own and stop/kill reach it directly.

LOCAL_SCRIPTS = Path(__file__).resolve().parents[1] / "infra" / "local"
INFLUX_ORG = "sems"
INFLUX_TOKEN = "sems-dev-token"


@functools.cache
def _install(script: str) -> None:
    """Install (or build, for InfluxDB) once per test session; the scripts skip what is there."""
    subprocess.run(["bash", str(LOCAL_SCRIPTS / script), "install"], check=True,
                   stdout=subprocess.DEVNULL)


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class _ScriptServer:
    """A server started by ``infra/local/<script> run DIR PORT``."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    script = ""
    name = ""
    stop_signal = signal.SIGTERM

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.out"

    def _ready(self) -> bool:
        raise NotImplementedError

    def _after_start(self) -> None:
        """One-time setup once the server answers."""

    def start(self, *, timeout_s: float = 60) -> Self:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"{self.name} on port {self.port} is already running")
        _install(self.script)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.process = spawn(
                ["bash", str(LOCAL_SCRIPTS / self.script), "run", str(self.workdir),
                 str(self.port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            wait_until(lambda: self._alive() and self._ready(), timeout_s=timeout_s,
                       what=f"{self.name} on port {self.port}", poll_s=0.05)
            self._after_start()
        except BaseException:
            self.kill()
            raise
        return self

    def _alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() \
                else ""
            raise RuntimeError(f"{self.name} exited; output:\n{tail}")
        return True

    def stop(self, *, timeout_s: float = 60) -> None:
        """A clean shutdown with the signal the server treats as one."""
        if self.process is not None:
            stop_process(self.process, timeout_s=timeout_s, sig=self.stop_signal)
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            kill_group(self.process)
        self.process = None


@dataclass
class InfluxDB(_ScriptServer):
    """InfluxDB 2.7 built from the Go module proxy (``influxdb.sh``), org ``sems``, an admin
    token; buckets are the application's to create. Stops cleanly on SIGINT."""

    script = "influxdb.sh"
    name = "influxd"
    stop_signal = signal.SIGINT

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        return _http_ok(f"{self.url}/health")

    def _after_start(self) -> None:
        subprocess.run(["bash", str(LOCAL_SCRIPTS / self.script), "setup", str(self.workdir),
                        str(self.port)], check=True, stdout=subprocess.DEVNULL)


@dataclass
class Postgres(_ScriptServer):
    """PostgreSQL 15 (Debian), database ``sems``, trust authentication on 127.0.0.1. SIGINT is
    its fast shutdown (SIGTERM would wait for every client to disconnect)."""

    script = "postgres.sh"
    name = "postgres"
    stop_signal = signal.SIGINT

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/sems"

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=1) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False


@dataclass
class Redis(_ScriptServer):
    """Redis 7 (Debian), no persistence: a restart starts empty."""

    script = "redis.sh"
    name = "redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ready(self) -> bool:
        return _redis_pong(self.port)


def store_server_versions() -> dict[str, str]:
    """Versions of the production store servers, as their binaries report them (benchmarks
    record them beside their results)."""
    def first_line(argv: list[str]) -> str:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) \
            else "unknown"

    influxd = subprocess.run(["bash", str(LOCAL_SCRIPTS / "influxdb.sh"), "install"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return {
        "influxdb": first_line([influxd, "version"]).split(" build_date")[0],
        "postgresql": first_line(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        "redis": first_line(["redis-server", "--version"]).split(" sha=")[0],
    }
