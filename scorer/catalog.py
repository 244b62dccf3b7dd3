"""The organizer's catalog: hidden datasets (registered by manifest, re-verified on a schedule)
and benchmarks (a dataset with limits; immutable once added)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import structlog

from scorer.core.manifest import DatasetError, Manifest
from scorer.datasets import build_manifest, full_verify
from scorer.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from scorer.models import Benchmark, DatasetRecord
from scorer.store import SqliteJobStore, now

log = structlog.get_logger("scorer.catalog")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Catalog:
    def __init__(self, *, store: SqliteJobStore, gpu_count: int) -> None:
        self.store = store
        self._gpu_count = gpu_count

    def add_dataset(self, name: str, videos_dir: str, labels_csv: bytes) -> DatasetRecord:
        _check_name("dataset", name)
        folder = Path(videos_dir)
        if not folder.is_absolute():
            raise InvalidArgumentError("videos_dir must be an absolute path on the service host")
        if not folder.is_dir():
            raise InvalidArgumentError(
                f"videos_dir {videos_dir} is not a folder on the service host"
            )
        try:
            manifest, stats = build_manifest(folder, labels_csv)
        except DatasetError as exc:
            raise InvalidArgumentError(str(exc)) from exc
        existing = self.store.get_dataset(name)
        if existing is not None:
            same = existing.videos_dir == str(folder.resolve()) and Manifest.from_json(
                existing.manifest_json
            ).same_content(manifest)
            if not same:
                raise AlreadyExistsError(
                    f"dataset {name} exists with other contents; register it under a new name"
                )
            return existing  # re-adding the same files is a no-op (the first salt stays)
        record = DatasetRecord(
            name=name,
            videos_dir=str(folder.resolve()),
            manifest_json=manifest.to_json().decode(),
            manifest_digest=manifest.digest,
            stats_json=stats.to_json().decode(),
            created_at=now(),
        )
        if not self.store.add_dataset(record):
            raise AlreadyExistsError(f"dataset {name} was registered concurrently")
        log.info(
            "dataset_registered", dataset=name, digest=manifest.digest, videos=len(manifest.names)
        )
        stored = self.store.get_dataset(name)
        if stored is None:
            raise RuntimeError("invariant: stored must exist")
        return stored

    def verify_dataset(self, name: str) -> list[str]:
        record = self.dataset(name)
        problems = full_verify(Path(record.videos_dir), Manifest.from_json(record.manifest_json))
        self.store.set_dataset_verified(name, "; ".join(problems[:5]) if problems else None)
        log.info("dataset_verified", dataset=name, ok=not problems, problems=problems[:20])
        return problems

    def add_benchmark(self, bench: Benchmark) -> Benchmark:
        _check_name("benchmark", bench.name)
        self.dataset(bench.dataset)
        lim = bench.limits
        if not 0 < lim.time_limit_s <= 7 * 24 * 3600:
            raise InvalidArgumentError("time limit must be between 0 and 7 days")
        if lim.memory_bytes < 16 * 1024**2:
            raise InvalidArgumentError("memory must be at least 16 MiB")
        if not 0 < lim.cpus <= 1024:
            raise InvalidArgumentError("cpus must be positive")
        if lim.gpus < 0:
            raise InvalidArgumentError("gpus must be 0 (CPU only) or more")
        if lim.gpus > self._gpu_count:
            raise FailedPreconditionError(
                f"the benchmark asks for {lim.gpus} GPUs; this service has {self._gpu_count}"
            )
        key = bench.organizer_public_key
        if key is not None and len(key) != 32:
            raise InvalidArgumentError("the organizer public key must be a raw 32-byte X25519 key")
        try:
            self.store.add_benchmark(replace(bench, created_at=now()))
        except KeyError:
            raise AlreadyExistsError(
                f"benchmark {bench.name} exists with another definition; benchmarks never change"
            ) from None
        stored = self.store.get_benchmark(bench.name)
        if stored is None:
            raise RuntimeError("invariant: stored must exist")
        return stored

    def dataset(self, name: str) -> DatasetRecord:
        record = self.store.get_dataset(name)
        if record is None:
            raise NotFoundError(f"no dataset named {name}")
        return record

    def verify_due(self, interval_s: float) -> None:
        """Fully re-verify every dataset last verified more than `interval_s` ago."""
        for name in self.store.list_datasets():
            record = self.store.get_dataset(name)
            if record is None:
                continue
            age = (now() - (record.verified_at or record.created_at)).total_seconds()
            if age >= interval_s:
                self.verify_dataset(name)


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise InvalidArgumentError(
            f"{kind} name must be 1-64 characters of letters, digits and ._- (not {name!r})"
        )
