"""Wires the service together for `scorer serve`: store, signer, executor, scheduler, gRPC."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import structlog

from sandbox.docker_executor import DockerExecutor, DockerExecutorConfig
from scorer.config import ServiceConfig
from scorer.gpus import GpuInfo, discover, select_gpus
from scorer.receipts import Signer
from scorer.selftest import run_self_test
from scorer.server import build_server, set_serving
from scorer.service import Service
from scorer.store import SqliteJobStore
from scorer.telemetry import Telemetry

log = structlog.get_logger("scorer.app")


def make_executor(config: ServiceConfig) -> DockerExecutor:
    return DockerExecutor(
        DockerExecutorConfig(
            runtime=config.runtime,
            work_dir=config.state_dir / "mounts",
            gpu_mode=config.gpu_mode,
            gpu_driver_dir=config.gpu_driver_dir,
        )
    )


def discover_gpus(config: ServiceConfig) -> tuple[GpuInfo, ...]:
    """The GPUs this service hands out: every one found, or the pinned ones (which must exist)."""
    found = discover(Path(config.gpu_driver_dir))
    try:
        gpus = select_gpus(found, config.gpus)
    except ValueError as exc:
        raise SystemExit(f"scorer serve: {exc}") from None
    log.info(
        "gpus_discovered",
        found=len(found),
        used=[gpu.index for gpu in gpus],
        models=sorted({gpu.name for gpu in gpus}),
        driver_versions=sorted({gpu.driver_version for gpu in gpus}),
        uuids=[gpu.uuid for gpu in gpus],
        memory_total_bytes=[gpu.memory_total_bytes for gpu in gpus],
    )
    return gpus


def serve(
    config: ServiceConfig,
    *,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or `stop` is set); health turns SERVING after the self-test."""
    gpus = discover_gpus(config)  # first: a pinned GPU that is missing stops the start-up
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = SqliteJobStore(config.db_path)
    signer = Signer.load_or_create(config.key_path)
    executor = make_executor(config)
    telemetry = Telemetry()
    service = Service(
        config=config,
        store=store,
        executor=executor,
        signer=signer,
        telemetry=telemetry,
        gpus=gpus,
    )
    service.start()
    server, port, health = build_server(service, config.listen)
    telemetry.serve(config.metrics_listen)
    server.start()
    log.info(
        "serving",
        listen=config.listen,
        port=port,
        metrics=config.metrics_listen,
        state_dir=str(config.state_dir),
        keyid=signer.keyid,
        runtime=config.runtime,
    )
    stop = stop or threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    if config.self_test:
        problem = run_self_test(executor, config)
        if problem:
            log.error("self_test_failed", problem=problem)
        else:
            log.info("self_test_passed")
            set_serving(health, True)
    else:
        set_serving(health, True)
    if ready is not None:
        ready.set()
    stop.wait()
    set_serving(health, False)
    server.stop(grace=5).wait()
    service.stop()
    store.close()
    log.info("stopped")
