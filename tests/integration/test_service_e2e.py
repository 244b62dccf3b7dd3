"""End to end against the real engine: `scorer serve` in its own process, the CLI over gRPC,
real containers, a crash (SIGKILL) mid-run, offline receipt verification."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sandbox.images import build_busybox_image
from tests.integration.service_process import ServiceProcess

pytestmark = pytest.mark.docker

PREDICT = """set -eu
{ echo filename,label
  tail -n +2 /data/sample_submission.csv | while IFS=, read -r name _; do
    case "$name" in *a.mp4) echo "$name,0.8" ;; *) echo "$name,0.3" ;; esac
  done; } > "$SCORER_SUBMISSION_PATH"
"""
SCRIPTS = {
    "predict": PREDICT,
    "slow-predict": "sleep 4\n" + PREDICT,
    "sleep": "exec sleep 3600\n",
    "nan": "set -eu\n{ echo filename,label; tail -n +2 /data/sample_submission.csv | "
    "sed 's/0.5$/nan/'; } > \"$SCORER_SUBMISSION_PATH\"\n",
}
# Eight "videos": names ending in a.mp4 are FAKE; public and private splits.
VIDEOS = {
    f"clip{i}{'a' if i % 2 else 'b'}.mp4": (i % 2, "public" if i < 4 else "private")
    for i in range(8)
}


@pytest.fixture(scope="module")
def e2e_images(docker_client: docker.DockerClient) -> Iterator[dict[str, str]]:
    tags = {}
    for name, script in SCRIPTS.items():
        tag = f"scorer-e2e/{name}:latest"
        build_busybox_image(tag, script, client=docker_client)
        tags[name] = tag
    yield tags
    for tag in tags.values():
        docker_client.images.remove(tag, force=True)


@pytest.fixture
def hidden(tmp_path: Path) -> tuple[Path, Path]:
    tmp_path.chmod(0o755)
    videos = tmp_path / "videos"
    videos.mkdir(mode=0o755)
    videos.chmod(0o755)
    for name in VIDEOS:
        (videos / name).write_bytes(name.encode() * 100)
        (videos / name).chmod(0o644)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "filename,label,split\n"
        + "".join(f"{n},{'FAKE' if y else 'REAL'},{s}\n" for n, (y, s) in VIDEOS.items())
    )
    return videos, labels


@pytest.fixture
def service(
    tmp_path: Path, hidden: tuple[Path, Path], docker_client: docker.DockerClient
) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(tmp_path / "state", tmp_path / "serve.log")
    svc.start()
    videos, labels = hidden
    svc.cli("keys", "organizer", "--out", str(tmp_path / "keys"), check=True)
    svc.cli(
        "dataset", "add", "hidden", "--videos", str(videos), "--labels", str(labels), check=True
    )
    svc.cli(
        "benchmark",
        "add",
        "main",
        "--dataset",
        "hidden",
        "--time-limit-seconds",
        "60",
        "--memory",
        "256m",
        "--organizer-public-key",
        str(tmp_path / "keys/organizer.pub"),
        check=True,
    )
    svc.cli(
        "benchmark",
        "add",
        "short",
        "--dataset",
        "hidden",
        "--time-limit-seconds",
        "2",
        "--memory",
        "256m",
        check=True,
    )
    yield svc
    svc.stop()
    db = sqlite3.connect(svc.state_dir / "scorer.db")
    (instance,) = db.execute("SELECT value FROM meta WHERE key='instance_id'").fetchone()
    db.close()
    mine = {"label": f"scorer.instance={instance}"}
    leftovers = docker_client.containers.list(all=True, filters=mine)
    assert not leftovers, [c.name for c in leftovers]


def _submit(
    svc: ServiceProcess, image: str, benchmark: str = "main", sid: str = "s1"
) -> tuple[int, dict[str, object]]:
    proc = svc.cli(
        "submit",
        "--image",
        image,
        "--benchmark",
        benchmark,
        "--team",
        "t1",
        "--submission-id",
        sid,
        "--wait",
        "--json",
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _wait_state(svc: ServiceProcess, evaluation_id: str, state: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc = svc.cli("status", evaluation_id, "--json")
        if proc.returncode == 0 and json.loads(proc.stdout)["state"] == state:
            return
        time.sleep(0.2)
    raise AssertionError(f"{evaluation_id} never reached {state}")


def test_submit_score_and_verify_offline(
    service: ServiceProcess, e2e_images: dict[str, str], tmp_path: Path
) -> None:
    """A real image is scored over gRPC; its receipt verifies offline and reveals private scores."""
    code, ev = _submit(service, e2e_images["predict"])
    assert code == 0 and ev["state"] == "SUCCEEDED", ev
    public = ev["public_metrics"]
    assert isinstance(public, dict) and public["n"] == 4 and public["roc_auc"] == 1.0
    receipt = tmp_path / "receipt.json"
    receipt.write_text(json.dumps(ev["receipt"]))
    pem = tmp_path / "key.pem"
    pem.write_text(service.cli("keys", "public", check=True).stdout)
    ok = service.cli("verify", str(receipt), "--public-key", str(pem))
    assert ok.returncode == 0, ok.stderr
    revealed = service.cli(
        "verify",
        str(receipt),
        "--public-key",
        str(pem),
        "--organizer-private-key",
        str(tmp_path / "keys/organizer.key"),
        "--json",
        check=True,
    )
    assert json.loads(revealed.stdout)["revealed_metrics"]["private"]["n"] == 4
    tampered = json.loads(receipt.read_text())
    tampered["payload"] = tampered["payload"][:-8] + "AAAAAAA="
    receipt.write_text(json.dumps(tampered))
    assert service.cli("verify", str(receipt), "--public-key", str(pem)).returncode == 1


def test_a_sleeping_image_times_out_and_leaves_nothing(
    service: ServiceProcess, e2e_images: dict[str, str]
) -> None:
    """The deadline kills the container; the verdict is TIMEOUT within the limit plus a grace."""
    started = time.monotonic()
    code, ev = _submit(service, e2e_images["sleep"], benchmark="short", sid="t1")
    assert code == 1 and ev["failure_reason"] == "TIMEOUT", ev
    assert time.monotonic() - started < 2 + 10
    assert ev["receipt"] is not None


def test_invalid_predictions_fail_with_a_safe_message(
    service: ServiceProcess, e2e_images: dict[str, str]
) -> None:
    """NaN predictions are INVALID_OUTPUT, and the message names no hidden video."""
    code, ev = _submit(service, e2e_images["nan"], sid="n1")
    assert code == 1 and ev["failure_reason"] == "INVALID_OUTPUT", ev
    assert "finite" in str(ev["failure_message"])
    assert not any(name[:-4] in str(ev["failure_message"]) for name in VIDEOS)


def test_cancel_kills_the_running_container(
    service: ServiceProcess, e2e_images: dict[str, str], docker_client: docker.DockerClient
) -> None:
    """Cancelling a RUNNING evaluation removes its container at once."""
    proc = service.cli(
        "submit",
        "--image",
        e2e_images["sleep"],
        "--benchmark",
        "main",
        "--team",
        "t1",
        "--submission-id",
        "c1",
        "--json",
        check=True,
    )
    evaluation_id = json.loads(proc.stdout)["id"]
    _wait_state(service, evaluation_id, "RUNNING")
    out = service.cli("cancel", evaluation_id, "--json", check=True)
    assert json.loads(out.stdout)["state"] == "CANCELLED"
    deadline = time.monotonic() + 10
    label = f"scorer.evaluation_id={evaluation_id}"
    while docker_client.containers.list(all=True, filters={"label": label}):
        assert time.monotonic() < deadline, "the container outlived its cancellation"
        time.sleep(0.1)


def test_a_crash_mid_run_is_recovered_with_one_receipt(
    service: ServiceProcess, e2e_images: dict[str, str], docker_client: docker.DockerClient
) -> None:
    """SIGKILL while a container runs; on restart it is reaped, retried, sealed exactly once."""
    proc = service.cli(
        "submit",
        "--image",
        e2e_images["slow-predict"],
        "--benchmark",
        "main",
        "--team",
        "t1",
        "--submission-id",
        "crash",
        "--json",
        check=True,
    )
    evaluation_id = json.loads(proc.stdout)["id"]
    _wait_state(service, evaluation_id, "RUNNING")
    service.kill()
    label = f"scorer.evaluation_id={evaluation_id}"
    orphans = docker_client.containers.list(all=True, filters={"label": label})
    assert orphans, "the crashed service's container should still be there"
    service.start()
    assert all(c.id not in {o.id for o in docker_client.containers.list(all=True)} for c in orphans)
    done = service.cli("watch", evaluation_id, "--json")
    ev = json.loads(done.stdout)
    assert ev["state"] == "SUCCEEDED" and ev["attempts"] == 2, ev
    service.stop()
    db = sqlite3.connect(service.state_dir / "scorer.db")
    count = db.execute(
        "SELECT COUNT(*) FROM receipts WHERE evaluation_id=?", (evaluation_id,)
    ).fetchone()[0]
    db.close()
    assert count == 1


def test_operations_surfaces(service: ServiceProcess, e2e_images: dict[str, str]) -> None:
    """Prometheus counts the outcome; every log line is JSON; run lines carry evaluation_id."""
    code, ev = _submit(service, e2e_images["predict"], sid="ops")
    assert code == 0
    url = f"http://127.0.0.1:{service.metrics_port}/metrics"
    expected = 'scorer_evaluations_finished_total{reason="",state="SUCCEEDED"} 1.0'
    text, deadline = "", time.monotonic() + 5  # counted just after the state commits
    while expected not in text and time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 -- loopback URL
            text = reply.read().decode()
        time.sleep(0.05)
    assert expected in text
    lines = [json.loads(line) for line in service.log_path.read_text().splitlines() if line]
    run_lines = [line for line in lines if line.get("event") == "run_finished"]
    assert run_lines and all(line["evaluation_id"] == ev["id"] for line in run_lines)


def test_try_says_what_the_service_would_say(
    e2e_images: dict[str, str], hidden: tuple[Path, Path], tmp_path: Path
) -> None:
    """`scorer try` runs the same sandbox and validation locally, with no service."""
    svc = ServiceProcess(tmp_path / "unused", tmp_path / "unused.log")
    good = svc.cli("try", "--image", e2e_images["predict"], "--videos", str(hidden[0]))
    assert good.returncode == 0 and "would accept" in good.stdout, good.stderr
    bad = svc.cli("try", "--image", e2e_images["nan"], "--videos", str(hidden[0]))
    assert bad.returncode == 1 and "INVALID_OUTPUT" in bad.stdout
