"""Operations: Prometheus metrics on their own registry and port, structlog JSON lines."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from scorer import __version__


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr; `evaluation_id` is bound by the runner on every line of a run."""
    logging.basicConfig(stream=sys.stderr, format="%(message)s", level=level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


class Telemetry:
    """All service metrics. Labels are low-cardinality: never an evaluation id or a team."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.submitted = Counter(
            "scorer_evaluations_submitted", "Evaluations accepted (new, not replays).", registry=r
        )
        self.finished = Counter(
            "scorer_evaluations_finished",
            "Evaluations that reached a terminal state, by state and failure reason.",
            ["state", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "scorer_infrastructure_retries",
            "Attempts re-queued after an infrastructure failure.",
            registry=r,
        )
        self.queued = Gauge("scorer_evaluations_queued", "Evaluations waiting to run.", registry=r)
        self.running = Gauge(
            "scorer_evaluations_running", "Evaluations preparing, running or scoring.", registry=r
        )
        self.run_seconds = Histogram(
            "scorer_run_duration_seconds",
            "Wall time of participants' containers.",
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 9 * 3600, 24 * 3600),
            registry=r,
        )
        self.evaluation_seconds = Histogram(
            "scorer_evaluation_duration_seconds",
            "From submission to a terminal state.",
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 9 * 3600, 24 * 3600),
            registry=r,
        )
        self.deadline_overrun = Histogram(
            "scorer_deadline_kill_overrun_seconds",
            "How long after its time limit a timed-out run was killed and collected.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=r,
        )
        self.image_uploads = Counter(
            "scorer_image_uploads",
            "UploadImage calls by outcome (loaded, already_present, rejected, too_large, invalid,"
            " aborted, failed).",
            ["outcome"],
            registry=r,
        )
        self.images_evicted = Counter(
            "scorer_images_evicted",
            "Uploaded images removed from the engine to keep within the image store budget.",
            registry=r,
        )
        self.image_store_bytes = Gauge(
            "scorer_image_store_bytes",
            "Bytes of the images this service loaded and may evict.",
            registry=r,
        )
        info = Gauge("scorer_build_info", "Always 1; the version label.", ["version"], registry=r)
        info.labels(version=__version__).set(1)

    def track_depth(self, queued: Callable[[], int], running: Callable[[], int]) -> None:
        self.queued.set_function(queued)
        self.running.set_function(running)

    def observe_run(self, wall_s: float, *, timed_out: bool, overrun_s: float) -> None:
        self.run_seconds.observe(wall_s)
        if timed_out:
            self.deadline_overrun.observe(max(overrun_s, 0.0))

    def observe_finished(self, state: str, reason: str | None, duration_s: float) -> None:
        self.finished.labels(state=state, reason=reason or "").inc()
        self.evaluation_seconds.observe(duration_s)

    def serve(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=self.registry)
