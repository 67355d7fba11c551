"""Real servers for tests and benchmarks, started on 127.0.0.1 in a private folder.

Mosquitto comes from the Debian package (``infra/local/install-services.sh``). Readiness is a
condition (the port accepts an MQTT CONNECT), never a fixed sleep.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


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
            # with MQTT 5 Receive Maximum, so the broker is where a burst waits.
            "max_queued_messages 0\n"
            "max_queued_bytes 0\n"
            "max_inflight_messages 1000\n"
            "persistent_client_expiration 1d\n"
            "set_tcp_nodelay true\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        return conf

    def start(self) -> Mosquitto:
        conf = self.write_config()
        self.process = subprocess.Popen(
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
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def dropped_messages_logged(self) -> bool:
        return "Outgoing messages are being dropped" in self.log_path.read_text()
