"""Runs with the GPU host's own PyTorch, in the sandbox or bare: writes what it sees as JSON.

Usage: python3 torch_probe.py [OUT]  (default: $SCORER_SUBMISSION_PATH). Not a test module.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

SIZE = 8192  # bf16 8192^3, as in shared/MEASURED.md
REPEATS = 200
ROUNDS = 3
TARGETS = (("1.1.1.1", 53), ("8.8.8.8", 443), ("169.254.169.254", 80))


def network() -> dict[str, str]:
    """Each outside address: 'connected' or the error that stopped it."""
    seen = {}
    for host, port in TARGETS:
        try:
            socket.create_connection((host, port), timeout=2).close()
            seen[f"{host}:{port}"] = "connected"
        except OSError as exc:
            seen[f"{host}:{port}"] = f"{type(exc).__name__}: {exc.strerror or exc}"
    return seen


def matmul(torch: Any) -> dict[str, Any]:
    a = torch.randn(SIZE, SIZE, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(SIZE, SIZE, device="cuda", dtype=torch.bfloat16)
    c = a @ b
    expected = a[:64].float() @ b[:, :64].float()
    ok = bool(torch.allclose(c[:64, :64].float(), expected, rtol=0.05, atol=1.0))
    torch.cuda.synchronize()
    seconds = []
    for _ in range(ROUNDS):
        begun = time.perf_counter()
        for _ in range(REPEATS):
            c = a @ b
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - begun)
    median = statistics.median(seconds)
    return {
        "matmul_ok": ok,
        "matmul_seconds": seconds,
        "matmul_tflops": 2 * SIZE**3 * REPEATS / median / 1e12,
        "torch_allocated_bytes": int(torch.cuda.memory_allocated()),
    }


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ["SCORER_SUBMISSION_PATH"])
    report: dict[str, Any] = {
        "uid": os.getuid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "nvidia_visible_devices": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
        "dev_nodes": sorted(p.name for p in Path("/dev").iterdir() if p.name.startswith("nvidia")),
        "interfaces": sorted(p.name for p in Path("/sys/class/net").iterdir()),
        "network": network(),
    }
    import torch

    report["torch"] = torch.__version__
    report["cuda_available"] = torch.cuda.is_available()
    report["device_count"] = torch.cuda.device_count() if report["cuda_available"] else 0
    report["device_names"] = [torch.cuda.get_device_name(i) for i in range(report["device_count"])]
    if report["cuda_available"]:
        report.update(matmul(torch))
        time.sleep(1.0)  # hold the memory a moment longer than the monitor's 0.5 s interval
    out.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
