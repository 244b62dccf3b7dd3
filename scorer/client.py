"""A thin gRPC client for the CLI and the demo; errors become ClientError with the server's
words."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scorer.v1 import scorer_pb2 as pb
from scorer.v1 import scorer_pb2_grpc as pb_grpc

DEFAULT_SERVER = "127.0.0.1:50051"
UPLOAD_CHUNK_BYTES = 1024 * 1024


class ClientError(Exception):
    def __init__(self, code: grpc.StatusCode | None, message: str) -> None:
        super().__init__(message)
        self.code = code


def server_address(explicit: str | None) -> str:
    return explicit or os.environ.get("SCORER_SERVER") or DEFAULT_SERVER


class Client:
    def __init__(self, address: str, *, timeout_s: float = 30.0) -> None:
        self.address = address
        self._channel = grpc.insecure_channel(address)
        self._timeout_s = timeout_s
        self.evaluations = pb_grpc.EvaluationServiceStub(self._channel)
        self.admin = pb_grpc.AdminServiceStub(self._channel)
        self.audit = pb_grpc.AuditServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: Any, request: Any, *, timeout_s: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout_s or self._timeout_s)
        except grpc.RpcError as exc:
            raise _client_error(exc, self.address) from None

    def stream(self, method: Any, request: Any) -> Iterator[Any]:
        try:
            yield from method(request)
        except grpc.RpcError as exc:
            raise _client_error(exc, self.address) from None

    def serving(self, timeout_s: float = 2.0) -> bool:
        try:
            reply = self._health.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def submit(self, **fields: str) -> pb.SubmitEvaluationResponse:
        return self.call(self.evaluations.SubmitEvaluation, pb.SubmitEvaluationRequest(**fields))  # type: ignore[no-any-return]

    def get(self, evaluation_id: str) -> pb.Evaluation:
        return self.call(self.evaluations.GetEvaluation, pb.GetEvaluationRequest(id=evaluation_id))  # type: ignore[no-any-return]

    def upload_image(
        self,
        path: Path,
        *,
        name: str = "",
        on_bytes: Callable[[int], None] | None = None,
        timeout_s: float = 24 * 3600,
        digest: tuple[int, str] | None = None,
    ) -> pb.UploadImageResponse:
        """Stream a `docker save` tarball (.tar, .gz, .zst), hashed first unless `digest` gives
        its (size, sha256) already, in chunks of UPLOAD_CHUNK_BYTES."""
        size, sha256 = digest or file_sha256(path)
        meta = pb.UploadImageMetadata(
            declared_size_bytes=size, sha256=sha256, name=name or path.name
        )

        def messages() -> Iterator[pb.UploadImageRequest]:
            yield pb.UploadImageRequest(metadata=meta)
            with path.open("rb") as src:
                while chunk := src.read(UPLOAD_CHUNK_BYTES):
                    yield pb.UploadImageRequest(chunk=chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))

        return self.call(self.evaluations.UploadImage, messages(), timeout_s=timeout_s)  # type: ignore[no-any-return]

    def watch(self, evaluation_id: str) -> Iterator[pb.EvaluationEvent]:
        return self.stream(
            self.evaluations.WatchEvaluation, pb.WatchEvaluationRequest(id=evaluation_id)
        )


def file_sha256(path: Path) -> tuple[int, str]:
    """(size in bytes, hex sha256) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as src:
        while chunk := src.read(UPLOAD_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _client_error(exc: grpc.RpcError, address: str) -> ClientError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ClientError(code, f"cannot reach the scorer service at {address}: {details}")
    name = code.name if code is not None else "ERROR"
    return ClientError(code, f"{name}: {details}")
