"""A real `scorer serve` process for the end-to-end tier: started, probed, killed, restarted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from scorer.client import Client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    def __init__(self, state_dir: Path, log_path: Path, *, listen_host: str = "127.0.0.1") -> None:
        """`listen_host` "0.0.0.0" binds beyond loopback; `address` stays the loopback one."""
        self.state_dir = state_dir
        self.log_path = log_path
        self.port = free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.listen_host = listen_host
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.port}"  # follows `port` (subclasses may choose it)

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "scorer", "serve", "--listen", self.listen,
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--state-dir", str(self.state_dir),
        ]  # fmt: skip

    def start(self, timeout_s: float = 120) -> None:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        with Client(self.address) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"scorer serve exited:\n{self.log_path.read_text()}")
                if client.serving():
                    return
                time.sleep(0.2)
        raise AssertionError(f"scorer serve never became healthy:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: what a crash, an OOM kill of the service or a power cut looks like."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "scorer", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "SCORER_SERVER": self.address},
            timeout=300,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"scorer {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc
