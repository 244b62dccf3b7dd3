"""The host's NVIDIA GPUs: discovery and used-memory sampling, through NVML (nvidia-ml-py) with
`nvidia-smi` as the fallback. A host where neither answers has no GPUs (an empty tuple)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Protocol

DEFAULT_DRIVER_DIR = Path("/usr/local/nvidia")  # where GPU hosts here keep the driver's files
INVENTORY_QUERY = "index,uuid,name,driver_version,memory.total"
MEMORY_QUERY = "index,memory.used"
MIB = 1024**2
_SMI_TIMEOUT_S = 20.0


class GpuQueryError(Exception):
    """NVML or nvidia-smi could not answer (no driver, no GPU, or an unreadable reply)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuInfo:
    index: int  # the host's device index (NVML's and nvidia-smi's enumeration order)
    uuid: str  # "GPU-…": what the Container Toolkit is asked for
    name: str  # the model, e.g. "NVIDIA H200"
    driver_version: str
    memory_total_bytes: int


# --- pure parsing -----------------------------------------------------------------------------


def _fields(line: str, count: int, *, name_at: int | None = None) -> list[str]:
    parts = [part.strip() for part in line.split(",")]
    if len(parts) > count and name_at is not None:  # only a model name could hold a comma
        extra = len(parts) - count
        parts = [
            *parts[:name_at],
            ", ".join(parts[name_at : name_at + extra + 1]),
            *parts[name_at + extra + 1 :],
        ]
    if len(parts) != count:
        raise GpuQueryError(f"expected {count} fields in nvidia-smi's line {line!r}")
    return parts


def _mib(text: str, line: str) -> int:
    try:
        return int(float(text) * MIB)
    except ValueError:
        raise GpuQueryError(f"not a number of MiB in nvidia-smi's line {line!r}") from None


def _index(text: str, line: str) -> int:
    if not text.isdigit():
        raise GpuQueryError(f"not a GPU index in nvidia-smi's line {line!r}")
    return int(text)


def parse_smi_inventory(text: str) -> tuple[GpuInfo, ...]:
    """Parse `nvidia-smi --query-gpu=<INVENTORY_QUERY> --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        index, uuid, name, driver, memory = _fields(line, 5, name_at=2)
        gpus.append(
            GpuInfo(
                index=_index(index, line),
                uuid=uuid,
                name=name,
                driver_version=driver,
                memory_total_bytes=_mib(memory, line),
            )
        )
    return tuple(sorted(gpus, key=lambda gpu: gpu.index))


def parse_smi_memory_used(text: str) -> dict[int, int]:
    """Parse `nvidia-smi --query-gpu=<MEMORY_QUERY> --format=csv,noheader,nounits` into bytes."""
    used = {}
    for line in text.splitlines():
        if line.strip():
            index, memory = _fields(line, 2)
            used[_index(index, line)] = _mib(memory, line)
    return used


def select_gpus(found: Sequence[GpuInfo], pinned: Sequence[int] | None) -> tuple[GpuInfo, ...]:
    """The GPUs the service may hand out: all found (pinned None) or exactly the pinned ones."""
    if pinned is None:
        return tuple(found)
    by_index = {gpu.index: gpu for gpu in found}
    missing = [i for i in pinned if i not in by_index]
    if missing:
        present = ", ".join(str(i) for i in sorted(by_index)) or "none"
        raise ValueError(
            f"gpus names GPU index {', '.join(map(str, missing))}, which this host does not "
            f"have (GPUs found: {present})"
        )
    return tuple(by_index[i] for i in pinned)


def runtime_facts(gpus: Iterable[GpuInfo]) -> dict[str, str | None]:
    """The receipt's GPU facts: model and driver (None for a CPU-only run)."""
    chosen = list(gpus)
    if not chosen:
        return {"gpu_model": None, "driver_version": None}
    return {
        "gpu_model": ", ".join(sorted({gpu.name for gpu in chosen})),
        "driver_version": ", ".join(sorted({gpu.driver_version for gpu in chosen})),
    }


# --- NVML and nvidia-smi ------------------------------------------------------------------------


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _nvml(driver_dir: Path | None) -> ModuleType:
    """pynvml, initialised (each call must be paired with nvmlShutdown); GpuQueryError if not."""
    try:
        import pynvml
    except ImportError as exc:
        raise GpuQueryError(f"nvidia-ml-py is not installed: {exc}") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        if exc.value != pynvml.NVML_ERROR_LIBRARY_NOT_FOUND or not _preload(driver_dir):
            raise GpuQueryError(f"NVML: {exc}") from exc
        try:  # the library is loaded now, by its path: dlopen finds it again by its soname
            pynvml.nvmlInit()
        except pynvml.NVMLError as again:
            raise GpuQueryError(f"NVML: {again}") from again
    module: ModuleType = pynvml
    return module


def _preload(driver_dir: Path | None) -> bool:
    """Load libnvidia-ml from the driver's folder when it is not on the loader's path."""
    for folder in ("lib64", "lib"):
        path = driver_dir / folder / "libnvidia-ml.so.1" if driver_dir else None
        if path is not None and path.is_file():
            try:
                ctypes.CDLL(str(path))
            except OSError:
                continue
            return True
    return False


def nvml_inventory(driver_dir: Path | None = DEFAULT_DRIVER_DIR) -> tuple[GpuInfo, ...]:
    nvml = _nvml(driver_dir)
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    driver_version=driver,
                    memory_total_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                )
            )
        return tuple(gpus)
    except nvml.NVMLError as exc:
        raise GpuQueryError(f"NVML: {exc}") from exc
    finally:
        nvml.nvmlShutdown()


def find_smi(driver_dir: Path | None = DEFAULT_DRIVER_DIR) -> str | None:
    found = shutil.which("nvidia-smi")
    if found:
        return found
    candidate = driver_dir / "bin" / "nvidia-smi" if driver_dir else None
    return str(candidate) if candidate is not None and candidate.is_file() else None


def _smi_query(query: str, driver_dir: Path | None) -> str:
    smi = find_smi(driver_dir)
    if smi is None:
        raise GpuQueryError("nvidia-smi not found")
    try:
        done = subprocess.run(
            [smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GpuQueryError(f"nvidia-smi: {exc}") from exc
    if done.returncode != 0:  # e.g. 6 "No devices were found", 9 "couldn't communicate"
        raise GpuQueryError(f"nvidia-smi exited {done.returncode}: {done.stdout.strip()[:200]}")
    return done.stdout


def smi_inventory(driver_dir: Path | None = DEFAULT_DRIVER_DIR) -> tuple[GpuInfo, ...]:
    return parse_smi_inventory(_smi_query(INVENTORY_QUERY, driver_dir))


def discover(driver_dir: Path | None = DEFAULT_DRIVER_DIR) -> tuple[GpuInfo, ...]:
    """Every GPU on this host via NVML, else nvidia-smi; () when neither answers (a CPU host)."""
    for query in (nvml_inventory, smi_inventory):
        try:
            return query(driver_dir)
        except GpuQueryError:
            continue
    return ()


# --- used memory while a run is alive -----------------------------------------------------------


class MemoryReader(Protocol):
    def used_bytes(self, indices: Sequence[int]) -> int:
        """Device-level used memory summed over `indices`; GpuQueryError if unreadable."""
        ...

    def close(self) -> None: ...


class NvmlMemoryReader:
    def __init__(self, driver_dir: Path | None = DEFAULT_DRIVER_DIR) -> None:
        self._nvml = _nvml(driver_dir)
        self._handles: dict[int, Any] = {}

    def used_bytes(self, indices: Sequence[int]) -> int:
        nvml = self._nvml
        try:
            for i in indices:
                if i not in self._handles:
                    self._handles[i] = nvml.nvmlDeviceGetHandleByIndex(i)
            return sum(int(nvml.nvmlDeviceGetMemoryInfo(self._handles[i]).used) for i in indices)
        except nvml.NVMLError as exc:
            raise GpuQueryError(f"NVML: {exc}") from exc

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class SmiMemoryReader:
    def __init__(self, driver_dir: Path | None = DEFAULT_DRIVER_DIR) -> None:
        self._driver_dir = driver_dir
        if find_smi(driver_dir) is None:
            raise GpuQueryError("nvidia-smi not found")

    def used_bytes(self, indices: Sequence[int]) -> int:
        used = parse_smi_memory_used(_smi_query(MEMORY_QUERY, self._driver_dir))
        missing = [i for i in indices if i not in used]
        if missing:
            raise GpuQueryError(f"nvidia-smi does not list GPU {missing}")
        return sum(used[i] for i in indices)

    def close(self) -> None:
        pass


def open_memory_reader(driver_dir: Path | None = DEFAULT_DRIVER_DIR) -> MemoryReader | None:
    for kind in (NvmlMemoryReader, SmiMemoryReader):
        try:
            return kind(driver_dir)
        except GpuQueryError:
            continue
    return None


class GpuMonitor:
    """Samples the used memory of a run's GPUs in a thread, from start() to stop().

    The service hands each GPU to one evaluation at a time, so device-level used memory above
    the baseline taken before the run is that run's. Runs that hold memory for less than one
    interval can be missed; `peak_bytes` is None for no GPUs or when nothing could be read.
    """

    def __init__(
        self,
        indices: Sequence[int],
        *,
        interval_s: float = 0.5,
        driver_dir: Path | None = DEFAULT_DRIVER_DIR,
        reader: MemoryReader | None = None,
    ) -> None:
        self._indices = tuple(indices)
        self._interval_s = interval_s
        self._driver_dir = driver_dir
        self._reader = reader
        self._baseline: int | None = None
        self._peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def peak_bytes(self) -> int | None:
        if self._baseline is None or self._peak is None:
            return None
        return max(self._peak - self._baseline, 0)

    def start(self) -> None:
        if not self._indices:
            return
        if self._reader is None:
            self._reader = open_memory_reader(self._driver_dir)
        if self._reader is None:
            return
        self._baseline = self._read()
        self._thread = threading.Thread(target=self._loop, name="gpu-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> int | None:
        """End sampling (one last sample first) and return the peak above the baseline."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        return self.peak_bytes

    def _loop(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self._interval_s):
                self._sample()
                return

    def _sample(self) -> None:
        used = self._read()
        if used is not None:
            self._peak = used if self._peak is None else max(self._peak, used)

    def _read(self) -> int | None:
        try:
            return self._reader.used_bytes(self._indices) if self._reader else None
        except GpuQueryError:
            return None  # a missed sample: the next one may answer

    def __enter__(self) -> GpuMonitor:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
