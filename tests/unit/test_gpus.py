"""GPU discovery's pure parts (nvidia-smi's replies, pinning, receipt facts) and the memory
monitor's arithmetic over a scripted reader; the real NVML path runs in tests/gpu."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from scorer.gpus import (
    MIB,
    GpuInfo,
    GpuMonitor,
    GpuQueryError,
    discover,
    parse_smi_inventory,
    parse_smi_memory_used,
    runtime_facts,
    select_gpus,
)

H200 = GpuInfo(
    index=0,
    uuid="GPU-3f0c6a8e-51b2-4c1d-9f7e-2a8b6c0d1e23",
    name="NVIDIA H200",
    driver_version="580.159.03",
    memory_total_bytes=143771 * MIB,
)

INVENTORY_CASES = {
    "one H200": (
        "0, GPU-3f0c6a8e-51b2-4c1d-9f7e-2a8b6c0d1e23, NVIDIA H200, 580.159.03, 143771\n",
        [(0, "NVIDIA H200", "580.159.03", 143771 * MIB)],
    ),
    "two H100s, unsorted, blank line, CRLF": (
        "1, GPU-bbbb, NVIDIA H100 80GB HBM3, 580.159.04, 81559\r\n\r\n"
        "0, GPU-aaaa, NVIDIA H100 80GB HBM3, 580.159.04, 81559\r\n",
        [
            (0, "NVIDIA H100 80GB HBM3", "580.159.04", 81559 * MIB),
            (1, "NVIDIA H100 80GB HBM3", "580.159.04", 81559 * MIB),
        ],
    ),
    "a model name with a comma": (
        "0, GPU-cccc, Tesla T4, rev A, 535.54.03, 15360\n",
        [(0, "Tesla T4, rev A", "535.54.03", 15360 * MIB)],
    ),
    "nothing listed": ("", []),
}


@pytest.mark.parametrize("text, expected", INVENTORY_CASES.values(), ids=INVENTORY_CASES.keys())
def test_the_inventory_reply_parses_into_sorted_gpus(
    text: str, expected: list[tuple[int, str, str, int]]
) -> None:
    gpus = parse_smi_inventory(text)
    assert [(g.index, g.name, g.driver_version, g.memory_total_bytes) for g in gpus] == expected
    assert all(g.uuid.startswith("GPU-") for g in gpus)


BROKEN_INVENTORY = {
    "a driver error message": "NVIDIA-SMI has failed because it couldn't communicate with the "
    "NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n",
    "memory not supported": "0, GPU-aaaa, NVIDIA H200, 580.159.03, [N/A]\n",
    "no index": "GPU-aaaa, NVIDIA H200, 580.159.03, 143771\n",
    "a negative index": "-1, GPU-aaaa, NVIDIA H200, 580.159.03, 143771\n",
}


@pytest.mark.parametrize("text", BROKEN_INVENTORY.values(), ids=BROKEN_INVENTORY.keys())
def test_an_unreadable_inventory_reply_is_an_error_not_a_guess(text: str) -> None:
    with pytest.raises(GpuQueryError):
        parse_smi_inventory(text)


def test_the_memory_reply_parses_into_bytes_per_index() -> None:
    """`index,memory.used` in MiB becomes bytes keyed by index."""
    assert parse_smi_memory_used("0, 512\n1, 80123\n\n") == {0: 512 * MIB, 1: 80123 * MIB}
    with pytest.raises(GpuQueryError):
        parse_smi_memory_used("0, [N/A]\n")
    with pytest.raises(GpuQueryError):
        parse_smi_memory_used("0, 512, 3\n")


def test_no_pin_selects_every_gpu_and_a_pin_selects_exactly_those() -> None:
    second = GpuInfo(
        index=1, uuid="GPU-b", name="NVIDIA H200", driver_version="580", memory_total_bytes=1
    )
    assert select_gpus([H200, second], None) == (H200, second)
    assert select_gpus([H200, second], [1]) == (second,)
    assert select_gpus([H200, second], []) == ()
    assert select_gpus([], None) == ()


def test_pinning_a_gpu_the_host_lacks_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"GPU index 3, which this host does not have.*found: 0"):
        select_gpus([H200], [0, 3])
    with pytest.raises(ValueError, match="found: none"):
        select_gpus([], [0])


def test_receipt_facts_name_model_and_driver_or_none_for_cpu() -> None:
    assert runtime_facts([H200]) == {"gpu_model": "NVIDIA H200", "driver_version": "580.159.03"}
    assert runtime_facts([]) == {"gpu_model": None, "driver_version": None}


def test_a_host_without_nvml_or_nvidia_smi_has_no_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discovery falls through both paths to an empty tuple instead of raising."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("scorer.gpus.nvml_inventory", _unavailable)
    assert discover(tmp_path / "no-driver") == ()


def test_discovery_falls_back_to_nvidia_smi_in_the_driver_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With NVML unavailable, an nvidia-smi under <driver>/bin answers the inventory."""
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(
        "#!/bin/sh\necho '0, GPU-3f0c6a8e-51b2-4c1d-9f7e-2a8b6c0d1e23, NVIDIA H200, "
        "580.159.03, 143771'\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr("scorer.gpus.nvml_inventory", _unavailable)
    assert discover(tmp_path) == (H200,)


def _unavailable(_driver_dir: Path | None) -> tuple[GpuInfo, ...]:
    raise GpuQueryError("NVML: library not found")


class ScriptedReader:
    """Answers used memory from a script; after it runs out, repeats the last value."""

    def __init__(self, values: Sequence[int | None]) -> None:
        self._values = list(values)
        self.reads = 0
        self.closed = False
        self.done = threading.Event()

    def used_bytes(self, indices: Sequence[int]) -> int:
        value = self._values[min(self.reads, len(self._values) - 1)]
        self.reads += 1
        if self.reads >= len(self._values):
            self.done.set()
        if value is None:
            raise GpuQueryError("a missed sample")
        return value * len(indices)

    def close(self) -> None:
        self.closed = True


def test_the_monitor_reports_the_peak_above_the_pre_run_baseline() -> None:
    """Baseline 100, peak 900 (a failed sample in between is skipped): 800 for one GPU."""
    reader = ScriptedReader([100, 300, None, 900, 200])
    monitor = GpuMonitor((0,), interval_s=0.001, reader=reader)
    monitor.start()
    assert reader.done.wait(5)
    assert monitor.stop() == 800
    assert reader.closed


def test_the_monitor_sums_the_run_s_gpus() -> None:
    reader = ScriptedReader([10, 50])
    with GpuMonitor((0, 1), interval_s=0.001, reader=reader) as monitor:
        assert reader.done.wait(5)
    assert monitor.peak_bytes == 80


def test_a_cpu_run_or_an_unreadable_gpu_has_no_peak() -> None:
    with GpuMonitor((), reader=ScriptedReader([5])) as cpu:
        pass
    assert cpu.peak_bytes is None
    blind = ScriptedReader([None])
    with GpuMonitor((0,), interval_s=0.001, reader=blind) as unreadable:
        assert blind.done.wait(5)
    assert unreadable.peak_bytes is None


def test_memory_freed_below_the_baseline_is_not_a_negative_peak() -> None:
    reader = ScriptedReader([500, 100])
    with GpuMonitor((0,), interval_s=0.001, reader=reader) as monitor:
        assert reader.done.wait(5)
    assert monitor.peak_bytes == 0
