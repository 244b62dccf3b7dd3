"""The uploaded-image table of SqliteJobStore: digests, sizes, last use, pins, rejections.

A mixin so that store.py stays one screenful per concern; it shares the store's connection,
lock and transactions.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

IMAGE_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
  digest TEXT PRIMARY KEY, name TEXT NOT NULL, size_bytes INTEGER NOT NULL,
  tarball_sha256 TEXT NOT NULL, managed INTEGER NOT NULL, pinned INTEGER NOT NULL DEFAULT 0,
  uploaded_at TEXT NOT NULL, last_used_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS upload_rejections (
  tarball_sha256 TEXT PRIMARY KEY, reason TEXT NOT NULL, at TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRecord:
    digest: str  # "sha256:<hex>", the image id
    name: str  # the uploader's name for it
    size_bytes: int
    tarball_sha256: str
    managed: bool  # loaded by this service, so this service may evict it
    pinned: bool
    uploaded_at: datetime
    last_used_at: datetime


class _Store(Protocol):
    _db: sqlite3.Connection
    _lock: threading.RLock

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]: ...


def _ts(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def _record(row: sqlite3.Row) -> ImageRecord:
    return ImageRecord(
        digest=row["digest"],
        name=row["name"],
        size_bytes=row["size_bytes"],
        tarball_sha256=row["tarball_sha256"],
        managed=bool(row["managed"]),
        pinned=bool(row["pinned"]),
        uploaded_at=datetime.fromisoformat(row["uploaded_at"]),
        last_used_at=datetime.fromisoformat(row["last_used_at"]),
    )


class ImageRecords:
    """Methods mixed into SqliteJobStore."""

    def record_image(self: _Store, record: ImageRecord) -> ImageRecord:
        """Insert, or refresh name and last use of a known digest (pins and ownership stay)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO images VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(digest) DO UPDATE SET"
                " name=excluded.name, last_used_at=excluded.last_used_at,"
                " size_bytes=excluded.size_bytes",
                (
                    record.digest,
                    record.name,
                    record.size_bytes,
                    record.tarball_sha256,
                    int(record.managed),
                    int(record.pinned),
                    _ts(record.uploaded_at),
                    _ts(record.last_used_at),
                ),
            )
            row = db.execute("SELECT * FROM images WHERE digest=?", (record.digest,)).fetchone()
        return _record(row)

    def get_image(self: _Store, digest: str) -> ImageRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM images WHERE digest=?", (digest,)).fetchone()
        return None if row is None else _record(row)

    def image_by_tarball(self: _Store, tarball_sha256: str) -> ImageRecord | None:
        """The image last loaded from a tarball with this sha256, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM images WHERE tarball_sha256=? ORDER BY uploaded_at DESC LIMIT 1",
                (tarball_sha256,),
            ).fetchone()
        return None if row is None else _record(row)

    def images_lru(self: _Store) -> list[ImageRecord]:
        """Every recorded image, least recently used first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM images ORDER BY last_used_at, digest").fetchall()
        return [_record(r) for r in rows]

    def image_store_bytes(self: _Store) -> int:
        """Bytes of the images this service loaded (and may evict)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(size_bytes), 0) AS n FROM images WHERE managed=1"
            ).fetchone()
        return int(row["n"])

    def touch_image(self: _Store, digest: str, at: datetime | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE images SET last_used_at=? WHERE digest=?",
                (_ts(at or datetime.now(UTC)), digest),
            )

    def set_image_pinned(self: _Store, digest: str, pinned: bool) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE images SET pinned=? WHERE digest=?", (int(pinned), digest))
            return cur.rowcount == 1

    def delete_image(self: _Store, digest: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM images WHERE digest=? AND pinned=0", (digest,))

    def digests_in_states(self: _Store, states: Iterator[str] | list[str]) -> set[str]:
        """Image digests some evaluation in these states still needs."""
        values = list(states)
        marks = ",".join("?" for _ in values)
        with self._lock:
            rows = self._db.execute(
                f"SELECT DISTINCT image_digest FROM evaluations WHERE state IN ({marks})",  # noqa: S608 -- placeholders only
                values,
            ).fetchall()
        return {r["image_digest"] for r in rows}

    def record_rejection(self: _Store, tarball_sha256: str, reason: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO upload_rejections VALUES (?,?,?)",
                (tarball_sha256, reason, _ts(datetime.now(UTC))),
            )

    def rejection(self: _Store, tarball_sha256: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT reason FROM upload_rejections WHERE tarball_sha256=?", (tarball_sha256,)
            ).fetchone()
        return None if row is None else str(row["reason"])
