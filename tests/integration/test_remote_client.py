"""A client on another host: what the platform does. The host is a network namespace joined to
this one by a veth pair; from there the client knows only the service's address.

Done means for image intake: upload an image and get a score with nothing but the gRPC address of
a service bound beyond loopback, while admin calls from that host are refused.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.integration.service_process import ServiceProcess
from tests.integration.test_image_upload_e2e import saved_image  # noqa: F401
from tests.integration.test_service_e2e import hidden  # noqa: F401

pytestmark = pytest.mark.docker


def _ip(*args: str, netns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def remote_host() -> Iterator[tuple[str, str]]:
    """(network namespace, this host's address as seen from it)."""
    if os.geteuid() != 0:
        pytest.fail("a second host in a network namespace needs root (as the Docker tier does)")
    tag = uuid.uuid4().hex[:6]
    netns, here, there = f"scorer-{tag}", f"sc{tag}a", f"sc{tag}b"
    net = f"10.231.{random.randint(1, 254)}"  # a test subnet
    _ip("netns", "add", netns)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", netns)
        _ip("addr", "add", f"{net}.1/30", "dev", here)
        _ip("link", "set", here, "up")
        _ip("addr", "add", f"{net}.2/30", "dev", there, netns=netns)
        _ip("link", "set", there, "up", netns=netns)
        _ip("link", "set", "lo", "up", netns=netns)
        yield netns, f"{net}.1"
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


def test_a_client_on_another_host_uploads_an_image_and_gets_a_score(
    remote_host: tuple[str, str],
    hidden: tuple[Path, Path],  # noqa: F811
    saved_image: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:
    netns, host_ip = remote_host
    svc = ServiceProcess(tmp_path / "state", tmp_path / "serve.log", listen_host="0.0.0.0")  # noqa: S104 -- the point
    svc.start()
    try:
        videos, labels = hidden
        svc.cli("dataset", "add", "hidden", "--videos", str(videos), "--labels", str(labels),
                check=True)  # fmt: skip
        svc.cli("benchmark", "add", "main", "--dataset", "hidden", "--time-limit-seconds", "60",
                "--memory", "256m", check=True)  # fmt: skip
        path, image_id = saved_image

        def remote(*args: str) -> subprocess.CompletedProcess[str]:
            command = ["ip", "netns", "exec", netns, sys.executable, "-m", "scorer",
                       "--server", f"{host_ip}:{svc.port}", *args]  # fmt: skip
            env = {k: v for k, v in os.environ.items() if k != "SCORER_SERVER"}
            return subprocess.run(
                command, capture_output=True, text=True, timeout=300, check=False, env=env
            )

        # The remote host cannot reach the service's loopback address: only the bound one.
        assert remote("--server", svc.address, "list").returncode != 0
        proc = remote("submit", "--image-file", str(path), "--benchmark", "main", "--team", "t",
                      "--wait", "--json")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        ev = json.loads(proc.stdout)
        assert (ev["state"], ev["image_digest"]) == ("SUCCEEDED", image_id)
        denied = remote("benchmark", "add", "evil", "--dataset", "hidden",
                        "--time-limit-seconds", "1", "--memory", "64m")  # fmt: skip
        assert denied.returncode != 0 and "loopback" in denied.stderr
    finally:
        svc.stop()
