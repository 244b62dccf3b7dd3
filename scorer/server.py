"""The gRPC shell: servicers translate messages, the service decides; one table maps errors."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, TypeVar

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from scorer import convert
from scorer.core.manifest import Manifest
from scorer.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ScorerError,
)
from scorer.intake import UploadResult, UploadSpec
from scorer.service import Service, SubmitRequest
from scorer.store_images import ImageRecord
from scorer.v1 import scorer_pb2 as pb
from scorer.v1 import scorer_pb2_grpc as pb_grpc

log = structlog.get_logger("scorer.server")

STATUS_OF: dict[type[ScorerError], grpc.StatusCode] = {
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
MAX_PAGE_SIZE = 500
F = TypeVar("F", bound=Callable[..., Any])


def _abort(context: grpc.ServicerContext, exc: ScorerError) -> None:
    code = STATUS_OF.get(type(exc), grpc.StatusCode.INVALID_ARGUMENT)
    context.abort(code, str(exc))


def mapped(fn: F) -> F:
    """Domain errors become their status code; anything else is logged and is INTERNAL."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except ScorerError as exc:
            _abort(context, exc)
        return None

    return wrapper  # type: ignore[return-value]


def _loopback_only(context: grpc.ServicerContext) -> None:
    """Admin calls stay on loopback until authentication lands."""
    peer = context.peer()
    if not (peer.startswith(("ipv4:127.", "ipv6:[::1]", "unix:"))):
        raise PermissionDeniedError("admin calls are accepted from loopback only")


class _IdleTimeoutError(Exception):
    """The upload's client sent nothing for too long; the call was cancelled."""


class _IdleWatch:
    """Cancels an upload whose client has sent nothing for `limit_s` while the service waited.

    Threat: a client that opens an upload and stalls would hold a worker thread and an open load
    in the engine for good. Only time spent waiting for the client counts, not time the engine
    takes to read what was already sent.
    """

    def __init__(self, context: grpc.ServicerContext, limit_s: float) -> None:
        self._context = context
        self._limit_s = limit_s
        self._waiting_since: float | None = None
        self._done = threading.Event()
        self.fired = False
        threading.Thread(target=self._run, name="upload-idle", daemon=True).start()

    def next(self, requests: Iterator[pb.UploadImageRequest]) -> pb.UploadImageRequest | None:
        """The next message, None at the end; _IdleTimeoutError once the watch has fired (a
        cancelled call may look like an error or like an ordinary end of the stream)."""
        self._waiting_since = time.monotonic()
        try:
            message = next(requests, None)
        except grpc.RpcError:
            if self.fired:
                raise _IdleTimeoutError from None
            raise
        finally:
            self._waiting_since = None
        if self.fired:
            raise _IdleTimeoutError
        return message

    def _run(self) -> None:
        while not self._done.wait(min(1.0, self._limit_s / 4)):
            since = self._waiting_since
            if since is not None and time.monotonic() - since > self._limit_s:
                self.fired = True
                self._context.cancel()
                return

    def stop(self) -> None:
        self._done.set()


def _chunks(requests: Iterator[pb.UploadImageRequest], watch: _IdleWatch) -> Iterator[bytes]:
    while (message := watch.next(requests)) is not None:
        if message.WhichOneof("kind") != "chunk":
            raise InvalidArgumentError("only the first message may carry metadata")
        yield message.chunk


def _upload_response(result: UploadResult) -> pb.UploadImageResponse:
    r = result.report
    return pb.UploadImageResponse(
        image_digest=result.digest,
        name=result.name,
        already_present=result.already_present,
        tarball_sha256=result.tarball_sha256,
        compression=result.compression.value,
        report=pb.ImageReport(
            user=r.user,
            entrypoint=r.entrypoint,
            cmd=r.cmd,
            env=r.env,
            exposed_ports=r.exposed_ports,
            volumes=r.volumes,
            layers=r.layers,
            uncompressed_bytes=r.uncompressed_bytes,
            architecture=r.architecture,
            os=r.os,
        ),
    )


def _image(record: ImageRecord) -> pb.Image:
    return pb.Image(
        digest=record.digest,
        name=record.name,
        size_bytes=record.size_bytes,
        pinned=record.pinned,
        managed=record.managed,
        uploaded_at=convert.timestamp(record.uploaded_at),
        last_used_at=convert.timestamp(record.last_used_at),
    )


class EvaluationServicer(pb_grpc.EvaluationServiceServicer):
    def __init__(self, service: Service) -> None:
        self._service = service

    def UploadImage(
        self, request_iterator: Iterator[pb.UploadImageRequest], context: grpc.ServicerContext
    ) -> Any:
        watch = _IdleWatch(context, self._service.config.upload_idle_timeout_s)
        try:
            first = watch.next(request_iterator)
            if first is None or first.WhichOneof("kind") != "metadata":
                raise InvalidArgumentError("the first message must carry the upload's metadata")
            meta = first.metadata
            spec = UploadSpec(
                declared_size_bytes=meta.declared_size_bytes, sha256=meta.sha256, name=meta.name
            )
            chunks = _chunks(request_iterator, watch)
            return _upload_response(self._service.intake.upload(spec, chunks))
        except ScorerError as exc:
            _abort(context, exc)
        except _IdleTimeoutError:
            # The engine's load was cut already; the call is cancelled (the client sees CANCELLED).
            log.warning(
                "image_upload_idle",
                peer=context.peer(),
                idle_timeout_s=self._service.config.upload_idle_timeout_s,
            )
        except grpc.RpcError:
            # The client went away mid-stream; the engine's load was cut already.
            log.info("image_upload_aborted", peer=context.peer())
        finally:
            watch.stop()
        return None

    @mapped
    def SubmitEvaluation(self, request: pb.SubmitEvaluationRequest, context: Any) -> Any:
        ev, created = self._service.submit(
            SubmitRequest(
                submission_id=request.submission_id,
                benchmark=request.benchmark,
                team=request.team,
                image=request.image,
            )
        )
        return pb.SubmitEvaluationResponse(evaluation=convert.evaluation(ev), created=created)

    @mapped
    def GetEvaluation(self, request: pb.GetEvaluationRequest, context: Any) -> Any:
        return convert.evaluation(self._service.get(request.id))

    @mapped
    def ListEvaluations(self, request: pb.ListEvaluationsRequest, context: Any) -> Any:
        size = request.page_size or 50
        if not 0 < size <= MAX_PAGE_SIZE:
            raise InvalidArgumentError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        after = 0
        if request.page_token:
            if not request.page_token.isdigit():
                raise InvalidArgumentError("page_token is not one this service issued")
            after = int(request.page_token)
        rows = self._service.store.list_evaluations(
            team=request.team,
            benchmark=request.benchmark,
            state=convert.state_from_pb(request.state),
            after_seq=after,
            limit=size + 1,
        )
        token = str(rows[size - 1].seq) if len(rows) > size else ""
        return pb.ListEvaluationsResponse(
            evaluations=[convert.evaluation(e) for e in rows[:size]], next_page_token=token
        )

    def WatchEvaluation(
        self, request: pb.WatchEvaluationRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.EvaluationEvent]:
        try:
            for ev, event in self._service.watch(request.id, context.is_active):
                yield pb.EvaluationEvent(
                    evaluation=convert.evaluation(ev),
                    message=event.message,
                    at=convert.timestamp(event.at),
                )
        except ScorerError as exc:
            _abort(context, exc)

    @mapped
    def CancelEvaluation(self, request: pb.CancelEvaluationRequest, context: Any) -> Any:
        return convert.evaluation(self._service.cancel(request.id))

    @mapped
    def ListBenchmarks(self, request: pb.ListBenchmarksRequest, context: Any) -> Any:
        out = []
        for bench in self._service.store.list_benchmarks():
            record = self._service.store.get_dataset(bench.dataset)
            splits = list(Manifest.from_json(record.manifest_json).splits) if record else []
            out.append(
                convert.benchmark(
                    bench, dataset_digest=record.manifest_digest if record else "", splits=splits
                )
            )
        return pb.ListBenchmarksResponse(benchmarks=out)


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(self, service: Service) -> None:
        self._service = service

    @mapped
    def AddDataset(self, request: pb.AddDatasetRequest, context: Any) -> Any:
        _loopback_only(context)
        record = self._service.catalog.add_dataset(
            request.name, request.videos_dir, request.labels_csv
        )
        manifest = Manifest.from_json(record.manifest_json)
        per_split = manifest.videos_per_split()
        return convert.dataset(record, per_split)

    @mapped
    def VerifyDataset(self, request: pb.VerifyDatasetRequest, context: Any) -> Any:
        _loopback_only(context)
        problems = self._service.catalog.verify_dataset(request.name)
        return pb.VerifyDatasetResponse(ok=not problems, problems=problems)

    @mapped
    def AddBenchmark(self, request: pb.AddBenchmarkRequest, context: Any) -> Any:
        _loopback_only(context)
        if request.limits.gpus < 0 or request.limits.cpus < 0:
            raise InvalidArgumentError("limits must not be negative")
        bench = self._service.catalog.add_benchmark(convert.benchmark_from_request(request))
        return convert.benchmark(bench)

    @mapped
    def PinImage(self, request: pb.PinImageRequest, context: Any) -> Any:
        _loopback_only(context)
        return _image(self._service.intake.pin(request.digest, request.pinned))

    @mapped
    def ListImages(self, request: pb.ListImagesRequest, context: Any) -> Any:
        _loopback_only(context)
        return pb.ListImagesResponse(images=[_image(r) for r in self._service.store.images_lru()])


class AuditServicer(pb_grpc.AuditServiceServicer):
    def __init__(self, service: Service) -> None:
        self._service = service

    @mapped
    def GetPublicKey(self, request: pb.GetPublicKeyRequest, context: Any) -> Any:
        signer = self._service.signer
        return pb.PublicKey(
            keyid=signer.keyid, algorithm="ed25519", public_key_pem=signer.public_key_pem()
        )


def build_server(
    service: Service, listen: str, *, max_workers: int = 32
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A not-yet-started server bound to `listen` (port 0 picks one): (server, port, health)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    pb_grpc.add_EvaluationServiceServicer_to_server(EvaluationServicer(service), server)
    pb_grpc.add_AdminServiceServicer_to_server(AdminServicer(service), server)
    pb_grpc.add_AuditServiceServicer_to_server(AuditServicer(service), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [
        pb.DESCRIPTOR.services_by_name[s].full_name
        for s in ("EvaluationService", "AdminService", "AuditService")
    ]
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    return server, port, health_servicer


def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in [
        "",
        *(
            pb.DESCRIPTOR.services_by_name[s].full_name
            for s in ("EvaluationService", "AdminService", "AuditService")
        ),
    ]:
        health_servicer.set(name, status)
