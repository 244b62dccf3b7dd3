"""What the adversarial suite and the deadline benchmark share: `scorer serve` on a chosen runtime,
a small hidden set, the case images, and what can be observed of the host from outside."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import docker
import docker.errors

from sandbox.images import build_busybox_image
from scorer.client import Client
from scorer.v1 import scorer_pb2 as pb
from tests.integration.service_process import ServiceProcess, free_port

SCRIPTS = Path(__file__).resolve().parent
IMAGE_LABEL = "scorer.adversarial-image"
EVALUATION_LABEL = "scorer.evaluation_id"
MiB = 1024**2
# Small caps, all below the benchmark's memory (tmpfs pages are charged to the run's memory).
SANDBOX_CONFIG = """\
max_attempts = 1  # an INFRASTRUCTURE failure shows up at once, never hidden by a retry
cpu_slots = 1

[sandbox]
pids = 128
tmp_bytes = "32m"
output_bytes = "16m"
shm_bytes = "16m"
log_bytes = "64k"
"""
OUTPUT_CAP_BYTES = 16 * MiB
_LABEL_WORDS = (b"FAKE", b"REAL")


def unique_ports(count: int) -> list[int]:
    """Distinct free loopback ports (free_port alone may hand out the same one twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class RuntimeService(ServiceProcess):
    """A `scorer serve` process on a given OCI runtime and config file, on ports chosen by the
    caller (so images built beforehand can probe them)."""

    def __init__(
        self,
        state_dir: Path,
        log_path: Path,
        *,
        runtime: str,
        config: Path,
        ports: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(state_dir, log_path)
        self.runtime = runtime
        self.config = config
        if ports is not None:
            self.port, self.metrics_port = ports
            self.address = f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [*super().command(), "--config", str(self.config), "--runtime", self.runtime]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 -- loopback, fixed
            return str(reply.read().decode())

    def run_log_tail(self, evaluation_id: str) -> str | None:
        """The container output the operators' log kept for an evaluation (run_finished)."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            if evaluation_id not in line or '"run_finished"' not in line:
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("evaluation_id") == evaluation_id:
                    return str(entry.get("logs_tail", ""))
        return None


def write_config(path: Path, text: str = SANDBOX_CONFIG) -> Path:
    path.write_text(text)
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class HiddenSet:
    root: Path  # holds videos/ and labels.csv; only videos/ is registered
    videos: Path
    labels: Path
    public: int  # how many videos the public split holds


def make_hidden_set(root: Path, count: int = 4) -> HiddenSet:
    """`count` fake .mp4 files of random bytes (never containing a label word), world-readable
    in a 0755 folder; labels alternate FAKE/REAL, the first half public, the rest private."""
    root.chmod(0o755)
    videos = root / "videos"
    videos.mkdir(mode=0o755)
    videos.chmod(0o755)
    rows = ["filename,label,split"]
    for i in range(count):
        data = secrets.token_bytes(8192)
        while any(word in data for word in _LABEL_WORDS):
            data = secrets.token_bytes(8192)
        path = videos / f"clip{i:02d}.mp4"
        path.write_bytes(data)
        path.chmod(0o644)
        label, split = ("FAKE" if i % 2 else "REAL"), ("public" if i < count // 2 else "private")
        rows.append(f"{path.name},{label},{split}")
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    labels.chmod(0o600)
    return HiddenSet(root=root, videos=videos, labels=labels, public=count // 2)


def register(
    service: ServiceProcess, hidden: HiddenSet, benchmarks: dict[str, float], memory: str
) -> None:
    """The hidden set as dataset `hidden`, and one benchmark per (name, time limit)."""
    service.cli("dataset", "add", "hidden", "--videos", str(hidden.videos),
                "--labels", str(hidden.labels), check=True)  # fmt: skip
    for name, limit_s in benchmarks.items():
        service.cli("benchmark", "add", name, "--dataset", "hidden", "--time-limit-seconds",
                    f"{limit_s:g}", "--memory", memory, "--cpus", "1", check=True)  # fmt: skip


def tree_digest(root: Path) -> dict[str, str]:
    """Mode and sha256 of every entry under root (folders included), by relative path."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "-"
        found[str(path.relative_to(root))] = f"{info.st_mode:o}:{digest}"
    found["."] = f"{root.lstat().st_mode:o}"
    return found


def disk_usage_bytes(path: Path) -> int:
    """`du -sx` in bytes; files vanishing under other people's hands are tolerated."""
    proc = subprocess.run(
        ["du", "-sx", "-B1", str(path)], capture_output=True, text=True, check=False
    )
    return int(proc.stdout.split()[0])


def bytes_owned_by(path: Path, uid: int, gid: int) -> int:
    """Bytes in files under path (one file system) owned by uid or gid: where a sandbox escape,
    which lands as the run's unprivileged user, would leave its traces."""
    proc = subprocess.run(
        ["find", str(path), "-xdev", "(", "-uid", str(uid), "-o", "-gid", str(gid), ")",
         "-printf", "%s\\n"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return sum(int(size) for size in proc.stdout.split())


def rss_bytes(pid: int) -> int:
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) * 1024 if match else 0


class RssSampler:
    """Samples a process's resident set every `interval_s` on a thread; `peak_bytes` after."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self._pid = pid
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.peak_bytes = 0
        self.samples = 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak_bytes = max(self.peak_bytes, rss_bytes(self._pid))
                self.samples += 1
            self._stop.wait(self._interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)


def case_script(name: str, host_ports: Iterable[int]) -> str:
    """The image's /entry.sh: the host ports to probe, the shared helpers, the case itself."""
    ports = " ".join(str(p) for p in host_ports)
    return (
        f'HOST_PORTS="{ports}"\n'
        + (SCRIPTS / "_lib.sh").read_text()
        + (SCRIPTS / f"{name}.sh").read_text()
    )


class CaseImages:
    """Builds each case's image once (tagged scorer-adversarial/<case>); removes them all."""

    def __init__(self, client: docker.DockerClient, host_ports: Iterable[int]) -> None:
        self._client = client
        self._ports = tuple(host_ports)
        self.ids: dict[str, str] = {}

    @staticmethod
    def tag(name: str) -> str:
        return f"scorer-adversarial/{name.replace('_', '-')}:latest"

    def build(self, names: Iterable[str]) -> dict[str, str]:
        for name in names:
            if name not in self.ids:
                self.ids[name] = build_busybox_image(
                    self.tag(name), case_script(name, self._ports),
                    labels={IMAGE_LABEL: "1"}, client=self._client,
                )  # fmt: skip
        return self.ids

    def remove_all(self) -> None:
        for name in self.ids:
            with contextlib.suppress(docker.errors.NotFound):
                self._client.images.remove(self.tag(name), force=True)
        self.ids.clear()


def histogram(text: str, name: str) -> dict[str, float]:
    """A Prometheus histogram's unlabelled series from the text format: le -> count, sum, count."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.fullmatch(rf'{name}_(bucket\{{le="([^"]+)"\}}|sum|count) (\S+)', line)
        if match:
            found[match.group(2) or match.group(1)] = float(match.group(3))
    return found


TERMINAL = frozenset({pb.SUCCEEDED, pb.FAILED, pb.CANCELLED})


def poll_until_finished(client: Client, evaluation_id: str, timeout_s: float) -> pb.Evaluation:
    """GetEvaluation every 50 ms until a terminal state; AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        ev = client.get(evaluation_id)
        if ev.state in TERMINAL:
            return ev
        if time.monotonic() > deadline:
            raise AssertionError(f"not finished after {timeout_s:g} s: {ev}")
        time.sleep(0.05)
