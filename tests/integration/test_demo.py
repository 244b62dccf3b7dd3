"""The main job, as `make demo` runs it: the example detector, built offline, beats the baseline
on the synthetic hidden set, through the whole service, and its receipt verifies offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import docker
import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


def test_demo_end_to_end(docker_client: docker.DockerClient, tmp_path: Path) -> None:
    """`scorer demo` passes: SUCCEEDED, log loss below ln 2, receipt verified, private revealed."""
    build = subprocess.run(
        [str(ROOT / "scripts/build_detector_image.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "scorer", "demo", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "receipt is valid" in out and "the example detector beats the baseline" in out
    assert '"private"' in out
