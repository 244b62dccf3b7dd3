"""Image intake use cases: upload (inspect while streaming to the engine, verify), pin, eviction.

An upload is inspected as it arrives and handed to the engine's load through a gate, so nothing
is spooled to disk and the engine's work overlaps the transfer; the engine can create the image
only after the whole tarball passed (see scorer/images/inspect.py). From then on an evaluation
refers to the image by its digest only: the config's sha256, computed from the tarball and
checked against the id the engine reports.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from sandbox import ExecutorError
from sandbox.image_store import ImageInUseError, ImageLoadRefusedError, ImageStore
from scorer.config import ServiceConfig
from scorer.core.lifecycle import State
from scorer.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from scorer.images.feed import EngineFeed, FeedError
from scorer.images.inspect import ImageRejectedError, ImageReport, InspectCaps
from scorer.images.receive import Compression, UploadError, UploadProblem
from scorer.images.rewrite import untagged_tail
from scorer.images.upload import Inspected, receive_image
from scorer.store import SqliteJobStore, now
from scorer.store_images import ImageRecord
from scorer.telemetry import Telemetry

log = structlog.get_logger("scorer.intake")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
NEEDED = [s.value for s in (State.QUEUED, State.PREPARING, State.RUNNING, State.SCORING)]
REJECTED_PREFIX = "upload:sha256:"


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadSpec:
    declared_size_bytes: int
    sha256: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadResult:
    digest: str
    name: str
    report: ImageReport
    already_present: bool
    tarball_sha256: str
    compression: Compression


class ImageIntake:
    def __init__(
        self,
        *,
        config: ServiceConfig,
        store: SqliteJobStore,
        images: ImageStore,
        telemetry: Telemetry,
    ) -> None:
        self._config = config
        self._store = store
        self._images = images
        self._telemetry = telemetry
        self._evict_lock = threading.Lock()
        telemetry.image_store_bytes.set_function(store.image_store_bytes)

    def upload(self, spec: UploadSpec, chunks: Iterable[bytes]) -> UploadResult:
        """Receive, check and load one tarball; every outcome is counted."""
        outcome = "failed"
        try:
            result = self._upload(spec, chunks)
        except ImageRejectedError as exc:
            outcome = "rejected"
            self._store.record_rejection(spec.sha256, str(exc))
            log.warning(
                "image_rejected", tarball_sha256=spec.sha256, name=spec.name, reason=str(exc)
            )
            raise InvalidArgumentError(f"image rejected: {exc}") from None
        except ResourceExhaustedError:
            outcome = "too_large"
            raise
        except InvalidArgumentError:
            outcome = "invalid"
            raise
        except FailedPreconditionError:
            raise
        except BaseException:
            outcome = "aborted"  # the client went away mid-stream (the iterator raised)
            raise
        else:
            outcome = "already_present" if result.already_present else "loaded"
            return result
        finally:
            self._telemetry.image_uploads.labels(outcome=outcome).inc()

    def _upload(self, spec: UploadSpec, chunks: Iterable[bytes]) -> UploadResult:
        _check_spec(spec, self._config.upload_max_bytes)
        # The very same tarball, loaded before and still there: inspect it again, load nothing.
        known = self._store.image_by_tarball(spec.sha256)
        if known is not None and self._images.size_bytes(known.digest) is None:
            known = None
        feed = None if known is not None else EngineFeed(self._images.load)
        t0 = time.monotonic()
        # On any failure receive_image aborts the feed: the engine discards what it read.
        inspected = self._receive(spec, chunks, feed)
        t1 = time.monotonic()
        report = inspected.report
        try:
            present = self._images.size_bytes(report.config_digest) is not None
            already = known is not None or present
            if feed is not None and already:
                feed.abort()  # another tarball of an image the engine has: keep the one it has
            elif feed is not None:
                self._commit(feed, report)
        except BaseException as exc:
            if feed is not None:
                feed.abort()  # a no-op once the engine has read the whole stream
            if isinstance(exc, ExecutorError):
                raise FailedPreconditionError(f"the container engine failed: {exc}") from exc
            raise
        log.info(
            "image_uploaded",
            image_digest=report.config_digest,
            tarball_sha256=spec.sha256,
            received_bytes=inspected.received_bytes,
            already_present=already,
            receive_s=round(t1 - t0, 3),  # the engine reads the image meanwhile
            commit_s=round(time.monotonic() - t1, 3),
        )
        self._remember(spec, report, already)
        self.evict(keep=frozenset({report.config_digest}))
        return UploadResult(
            digest=report.config_digest,
            name=spec.name,
            report=report,
            already_present=already,
            tarball_sha256=spec.sha256,
            compression=inspected.compression,
        )

    def _receive(
        self, spec: UploadSpec, chunks: Iterable[bytes], feed: EngineFeed | None
    ) -> Inspected:
        try:
            return receive_image(
                chunks,
                declared_size_bytes=spec.declared_size_bytes,
                sha256_hex=spec.sha256,
                max_tar_bytes=self._config.image_max_uncompressed_bytes,
                caps=InspectCaps(
                    max_uncompressed_bytes=self._config.image_max_uncompressed_bytes,
                    max_layers=self._config.image_max_layers,
                ),
                sink=feed,
            )
        except UploadError as exc:
            log.warning("image_upload_refused", tarball_sha256=spec.sha256, reason=str(exc))
            if exc.problem is UploadProblem.TOO_LARGE:
                raise ResourceExhaustedError(str(exc)) from None
            raise InvalidArgumentError(str(exc)) from None
        except FeedError as exc:
            raise _engine_failure(exc) from exc

    def _commit(self, feed: EngineFeed, report: ImageReport) -> None:
        """The image passed: let the engine read its tag-less manifest and create it."""
        try:
            feed.put(untagged_tail(report.manifest_entry))
            loaded = feed.finish()
        except ImageLoadRefusedError as exc:
            raise ImageRejectedError(str(exc)) from exc
        except FeedError as exc:
            raise _engine_failure(exc) from exc
        if loaded != report.config_digest:
            # Not the image we inspected: take it out again and refuse.
            self._images.remove(loaded)
            raise ImageRejectedError("the engine loaded another image than the tarball declares")
        log.info("image_loaded", image_digest=loaded, layers=report.layers)

    def _remember(self, spec: UploadSpec, report: ImageReport, already: bool) -> None:
        known = self._store.get_image(report.config_digest)
        size = self._images.size_bytes(report.config_digest) or 0
        stamp = now()
        self._store.record_image(
            ImageRecord(
                digest=report.config_digest,
                name=spec.name,
                size_bytes=size,
                tarball_sha256=spec.sha256,
                # An image the engine had before any upload is not ours to evict.
                managed=known.managed if known else not already,
                pinned=False,
                uploaded_at=stamp,
                last_used_at=stamp,
            )
        )

    def rejection(self, image_ref: str) -> str | None:
        """The recorded reason an `upload:sha256:<hex>` reference was refused, if any."""
        if not image_ref.startswith(REJECTED_PREFIX):
            return None
        return self._store.rejection(image_ref.removeprefix(REJECTED_PREFIX))

    def pin(self, digest: str, pinned: bool) -> ImageRecord:
        if not self._store.set_image_pinned(digest, pinned):
            raise NotFoundError(f"no uploaded image {digest}")
        record = self._store.get_image(digest)
        if record is None:
            raise NotFoundError(f"no uploaded image {digest}")
        log.info("image_pinned" if pinned else "image_unpinned", image_digest=digest)
        return record

    def evict(self, keep: frozenset[str] = frozenset()) -> list[str]:
        """Remove least-recently-used images no evaluation needs until within the budget."""
        with self._evict_lock:
            total = self._store.image_store_bytes()
            if total <= self._config.image_store_bytes:
                return []
            needed = self._store.digests_in_states(NEEDED) | keep
            evicted: list[str] = []
            for record in self._store.images_lru():
                if total <= self._config.image_store_bytes:
                    break
                if record.pinned or not record.managed or record.digest in needed:
                    continue
                try:
                    self._images.remove(record.digest)
                except ImageInUseError:
                    continue
                except ExecutorError as exc:
                    log.warning("image_eviction_failed", image_digest=record.digest, error=str(exc))
                    continue
                self._store.delete_image(record.digest)
                total -= record.size_bytes
                evicted.append(record.digest)
                self._telemetry.images_evicted.inc()
                log.info(
                    "image_evicted",
                    image_digest=record.digest,
                    name=record.name,
                    size_bytes=record.size_bytes,
                    store_bytes=total,
                    budget_bytes=self._config.image_store_bytes,
                )
            if total > self._config.image_store_bytes:
                log.warning("image_store_over_budget", store_bytes=total)
            return evicted


def _engine_failure(exc: FeedError) -> Exception:
    """The engine stopped reading mid-stream: its verdict on the content, or its own failure."""
    if isinstance(exc.__cause__, ImageLoadRefusedError):
        return ImageRejectedError(str(exc.__cause__))
    return FailedPreconditionError(f"the container engine failed: {exc.__cause__ or exc}")


def _check_spec(spec: UploadSpec, max_bytes: int) -> None:
    if not _SHA256.match(spec.sha256):
        raise InvalidArgumentError("the metadata must carry the tarball's sha256 as 64 hex digits")
    if spec.declared_size_bytes <= 0:
        raise InvalidArgumentError("the metadata must declare the tarball's size in bytes")
    if spec.declared_size_bytes > max_bytes:
        raise ResourceExhaustedError(
            f"the tarball is {spec.declared_size_bytes} bytes; this service accepts {max_bytes}"
        )
    if not spec.name or len(spec.name) > 255 or not spec.name.isprintable():
        raise InvalidArgumentError("the image name must be 1-255 printable characters")
