"""`scorer demo`: the whole product on one machine, as a platform and an organizer would use it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click

from scorer.client import Client, ClientError
from scorer.v1 import scorer_pb2 as pb

BASELINE_LOG_LOSS = 0.6931


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _say(text: str) -> None:
    click.echo(click.style("==> ", fg="cyan", bold=True) + text)


def _scorer(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "scorer", *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"`scorer {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return proc


def _start_service(workdir: Path, address: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "scorer",
        "serve",
        "--listen",
        address,
        "--metrics-listen",
        f"127.0.0.1:{_free_port()}",
        "--state-dir",
        str(workdir / "state"),
    ]
    with (workdir / "serve.log").open("wb") as log_file:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    with Client(address) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited; see {workdir / 'serve.log'}")
            if client.serving():
                return proc
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"the service did not become healthy; see {workdir / 'serve.log'}")


def run_demo(*, image: str, workdir: Path, n_videos: int) -> bool:
    from scorer.synthetic import generate

    workdir.mkdir(parents=True, exist_ok=True)
    _say(f"generating {n_videos} synthetic H.264 clips (public and private splits)")
    data = generate(workdir / "hidden", n_videos=n_videos, seed=7)
    keys = workdir / "organizer-keys"
    _scorer("keys", "organizer", "--out", str(keys))
    address = f"127.0.0.1:{_free_port()}"
    env = {"SCORER_SERVER": address}
    _say(f"starting `scorer serve` on {address} (embedded SQLite in {workdir / 'state'})")
    service = _start_service(workdir, address)
    try:
        return _exercise(image, workdir, data, keys, env)
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()


def _exercise(image: str, workdir: Path, data: Path, keys: Path, env: dict[str, str]) -> bool:
    _say("registering the hidden dataset and a benchmark (private metrics sealed to the organizer)")
    click.echo(
        _scorer(
            "dataset",
            "add",
            "demo-videos",
            "--videos",
            str(data / "videos"),
            "--labels",
            str(data / "labels.csv"),
            env=env,
        ).stdout.rstrip()
    )
    click.echo(
        _scorer(
            "benchmark",
            "add",
            "demo",
            "--dataset",
            "demo-videos",
            "--time-limit-seconds",
            "600",
            "--memory",
            "2g",
            "--cpus",
            "2",
            "--organizer-public-key",
            str(keys / "organizer.pub"),
            env=env,
        ).stdout.rstrip()
    )
    _say(f"submitting {image} over gRPC and following it live")
    proc = _scorer(
        "submit",
        "--image",
        image,
        "--benchmark",
        "demo",
        "--team",
        "demo-team",
        "--submission-id",
        f"demo-{int(time.time())}",
        "--wait",
        "--json",
        check=False,
        env=env,
    )
    sys.stderr.write(proc.stderr)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"submit failed: {proc.stderr}")
    evaluation = json.loads(proc.stdout)
    if evaluation["state"] != "SUCCEEDED":
        click.echo(
            f"evaluation ended {evaluation['state']} {evaluation['failure_reason']}: "
            f"{evaluation['failure_message']}"
        )
        return False
    public = evaluation["public_metrics"]
    _say(
        f"public metrics: log_loss={public['log_loss']:.4f} (constant-0.5 baseline "
        f"{BASELINE_LOG_LOSS}), roc_auc={public['roc_auc']}, accuracy={public['accuracy']}, "
        f"n={public['n']}, log_loss_ci95={public['log_loss_ci95']}"
    )
    receipt = workdir / "receipt.json"
    receipt.write_text(json.dumps(evaluation["receipt"], indent=2))
    pem = workdir / "scorer-public-key.pem"
    pem.write_text(_scorer("keys", "public", env=env).stdout)
    _say(f"verifying the receipt offline: scorer verify {receipt.name} --public-key {pem.name}")
    click.echo(_scorer("verify", str(receipt), "--public-key", str(pem)).stdout.rstrip())
    _say("the organizer reveals the private split with their key")
    revealed = _scorer(
        "verify",
        str(receipt),
        "--public-key",
        str(pem),
        "--organizer-private-key",
        str(keys / "organizer.key"),
        "--json",
    )
    private = json.loads(revealed.stdout)["revealed_metrics"]
    click.echo(json.dumps(private, indent=2, sort_keys=True))
    beat = public["log_loss"] is not None and public["log_loss"] < BASELINE_LOG_LOSS
    _say("the example detector " + ("beats" if beat else "does NOT beat") + " the baseline")
    return beat


__all__ = ["ClientError", "pb", "run_demo"]
