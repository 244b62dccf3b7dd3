"""SqliteJobStore: the durable job table (WAL, synchronous=FULL) with compare-and-set transitions.

Every state change is one transaction that also appends an event; a receipt is inserted in the
same transaction that moves SCORING -> SUCCEEDED/FAILED, so "finished" is never reported before the
score is saved, and a UNIQUE key makes a second sealed attempt impossible.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scorer.core.lifecycle import TERMINAL, FailureReason, State, can_transition
from scorer.models import (
    Benchmark,
    BenchmarkLimits,
    DatasetRecord,
    Evaluation,
    Event,
    MissingPolicy,
)
from scorer.store_images import IMAGE_SCHEMA, ImageRecords

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (
  name TEXT PRIMARY KEY, videos_dir TEXT NOT NULL, manifest TEXT NOT NULL,
  manifest_digest TEXT NOT NULL, stats TEXT NOT NULL, created_at TEXT NOT NULL,
  verified_at TEXT, problem TEXT);
CREATE TABLE IF NOT EXISTS benchmarks (
  name TEXT PRIMARY KEY, dataset TEXT NOT NULL REFERENCES datasets(name),
  definition TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
  submission_id TEXT NOT NULL UNIQUE, team TEXT NOT NULL,
  benchmark TEXT NOT NULL REFERENCES benchmarks(name), image_ref TEXT NOT NULL,
  image_digest TEXT NOT NULL, gpus INTEGER NOT NULL, state TEXT NOT NULL,
  failure_reason TEXT, failure_message TEXT NOT NULL DEFAULT '',
  status_message TEXT NOT NULL DEFAULT '', public_metrics TEXT, usage TEXT, limits TEXT,
  attempts INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS evaluations_state ON evaluations(state, seq);
CREATE TABLE IF NOT EXISTS attempts (
  evaluation_id TEXT NOT NULL REFERENCES evaluations(id), n INTEGER NOT NULL,
  handle TEXT, outcome TEXT, detail TEXT NOT NULL DEFAULT '',
  started_at TEXT NOT NULL, ended_at TEXT, PRIMARY KEY (evaluation_id, n));
CREATE TABLE IF NOT EXISTS receipts (
  evaluation_id TEXT PRIMARY KEY REFERENCES evaluations(id), attempt INTEGER NOT NULL,
  envelope TEXT NOT NULL, predictions BLOB, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, evaluation_id TEXT NOT NULL, state TEXT NOT NULL,
  message TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_eval ON events(evaluation_id, seq);
"""

ACTIVE = (State.PREPARING, State.RUNNING, State.SCORING)


def now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


class SqliteJobStore(ImageRecords):
    """One connection guarded by a lock: simple, and SQLite serialises writers anyway."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # An accepted submission must survive power loss, not just a process crash.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
            self._db.executescript(IMAGE_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._changed.notify_all()

    def instance_id(self) -> str:
        """A stable id for this state dir, so two services on one engine never reap each other."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key='instance_id'").fetchone()
            if row:
                return str(row["value"])
            value = uuid.uuid4().hex[:16]
            db.execute("INSERT INTO meta VALUES ('instance_id', ?)", (value,))
            return value

    def wait_for_change(self, timeout_s: float) -> None:
        with self._changed:
            self._changed.wait(timeout_s)

    # --- datasets and benchmarks -------------------------------------------------------------

    def add_dataset(self, record: DatasetRecord) -> bool:
        """Insert; False if the name is taken (datasets never change)."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM datasets WHERE name=?", (record.name,)).fetchone():
                return False
            db.execute(
                "INSERT INTO datasets (name, videos_dir, manifest, manifest_digest, stats,"
                " created_at, verified_at) VALUES (?,?,?,?,?,?,?)",
                (
                    record.name,
                    record.videos_dir,
                    record.manifest_json,
                    record.manifest_digest,
                    record.stats_json,
                    _ts(record.created_at),
                    _ts(record.created_at),
                ),
            )
            return True

    def get_dataset(self, name: str) -> DatasetRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM datasets WHERE name=?", (name,)).fetchone()
        if row is None:
            return None
        return DatasetRecord(
            name=row["name"],
            videos_dir=row["videos_dir"],
            manifest_json=row["manifest"],
            manifest_digest=row["manifest_digest"],
            stats_json=row["stats"],
            created_at=_dt(row["created_at"]),
            verified_at=_dt(row["verified_at"]) if row["verified_at"] else None,
            problem=row["problem"],
        )

    def update_dataset_stats(self, name: str, stats_json: str) -> None:
        """Replace the cheap-check snapshot after a re-hash proved the contents unchanged."""
        with self._tx() as db:
            db.execute("UPDATE datasets SET stats=? WHERE name=?", (stats_json, name))

    def set_dataset_verified(self, name: str, problem: str | None) -> None:
        """Record a full re-hash; a problem fails every later run with DATASET_INTEGRITY."""
        with self._tx() as db:
            db.execute(
                "UPDATE datasets SET verified_at=?, problem=? WHERE name=?",
                (_ts(now()), problem, name),
            )

    def list_datasets(self) -> list[str]:
        with self._lock:
            return [r["name"] for r in self._db.execute("SELECT name FROM datasets ORDER BY name")]

    def add_benchmark(self, bench: Benchmark) -> bool:
        """Insert; False if identical; KeyError if the name exists with another definition."""
        definition = json.dumps(bench.definition(), sort_keys=True)
        with self._tx() as db:
            row = db.execute("SELECT definition FROM benchmarks WHERE name=?", (bench.name,))
            existing = row.fetchone()
            if existing:
                if existing["definition"] != definition:
                    raise KeyError(bench.name)
                return False
            db.execute(
                "INSERT INTO benchmarks VALUES (?,?,?,?)",
                (bench.name, bench.dataset, definition, _ts(bench.created_at or now())),
            )
            return True

    def get_benchmark(self, name: str) -> Benchmark | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM benchmarks WHERE name=?", (name,)).fetchone()
        return None if row is None else _benchmark(row)

    def list_benchmarks(self) -> list[Benchmark]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM benchmarks ORDER BY name").fetchall()
        return [_benchmark(r) for r in rows]

    # --- evaluations ---------------------------------------------------------------------------

    def create_evaluation(self, ev: Evaluation) -> tuple[Evaluation, bool]:
        """Insert QUEUED; on a known submission_id return the stored one and False."""
        with self._tx() as db:
            row = db.execute(
                "SELECT id FROM evaluations WHERE submission_id=?", (ev.submission_id,)
            ).fetchone()
            if row:
                existing = self._get(row["id"])
                if existing is None:
                    raise RuntimeError("invariant: existing must exist")
                return existing, False
            stamp = _ts(ev.created_at)
            db.execute(
                "INSERT INTO evaluations (id, submission_id, team, benchmark, image_ref,"
                " image_digest, gpus, state, limits, status_message, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    ev.id,
                    ev.submission_id,
                    ev.team,
                    ev.benchmark,
                    ev.image_ref,
                    ev.image_digest,
                    ev.gpus,
                    State.QUEUED.value,
                    _json(ev.limits),
                    ev.status_message,
                    stamp,
                    stamp,
                ),
            )
            self._event(db, ev.id, State.QUEUED, ev.status_message)
            created = self._get(ev.id)
            if created is None:
                raise RuntimeError("invariant: created must exist")
            return created, True

    def get(self, evaluation_id: str) -> Evaluation | None:
        with self._lock:
            return self._get(evaluation_id)

    def _get(self, evaluation_id: str) -> Evaluation | None:
        row = self._db.execute(
            "SELECT e.*, r.envelope FROM evaluations e LEFT JOIN receipts r"
            " ON r.evaluation_id = e.id WHERE e.id=?",
            (evaluation_id,),
        ).fetchone()
        return None if row is None else _evaluation(row)

    def get_by_submission(self, submission_id: str) -> Evaluation | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM evaluations WHERE submission_id=?", (submission_id,)
            ).fetchone()
            return None if row is None else self._get(row["id"])

    def list_evaluations(
        self,
        *,
        team: str = "",
        benchmark: str = "",
        state: State | None = None,
        after_seq: int = 0,
        limit: int = 50,
    ) -> list[Evaluation]:
        clauses: list[str] = ["e.seq > ?"]
        args: list[object] = [after_seq]
        for column, value in (("team", team), ("benchmark", benchmark)):
            if value:
                clauses.append(f"e.{column} = ?")
                args.append(value)
        if state is not None:
            clauses.append("e.state = ?")
            args.append(state.value)
        sql = (
            "SELECT e.*, r.envelope FROM evaluations e LEFT JOIN receipts r"  # noqa: S608 -- fixed columns, values bound
            f" ON r.evaluation_id = e.id WHERE {' AND '.join(clauses)} ORDER BY e.seq LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [_evaluation(r) for r in rows]

    def in_states(self, states: Sequence[State]) -> list[Evaluation]:
        marks = ",".join("?" for _ in states)
        with self._lock:
            rows = self._db.execute(
                "SELECT e.*, NULL AS envelope FROM evaluations e"  # noqa: S608 -- placeholders only
                f" WHERE e.state IN ({marks}) ORDER BY e.seq",
                [s.value for s in states],
            ).fetchall()
        return [_evaluation(r) for r in rows]

    def count_in_state(self, state: State) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) AS n FROM evaluations WHERE state=?", (state.value,)
            ).fetchone()
        return int(row["n"])

    def transition(
        self,
        evaluation_id: str,
        src: State | Sequence[State],
        dst: State,
        *,
        message: str = "",
        failure: tuple[FailureReason, str] | None = None,
        public_metrics: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
        receipt: tuple[int, Mapping[str, Any], bytes | None] | None = None,
        new_attempt: bool = False,
    ) -> bool:
        """Compare-and-set src -> dst in one transaction; False (and no change) if state moved."""
        sources = [src] if isinstance(src, State) else list(src)
        if not all(can_transition(s, dst) for s in sources):
            raise ValueError(f"no transition {[s.value for s in sources]} -> {dst.value}")
        marks = ",".join("?" for _ in sources)
        stamp = _ts(now())
        with self._tx() as db:
            cur = db.execute(
                "UPDATE evaluations SET state=?, status_message=?, updated_at=?,"  # noqa: S608 -- placeholders only
                " failure_reason=COALESCE(?, failure_reason),"
                " failure_message=COALESCE(?, failure_message),"
                " public_metrics=COALESCE(?, public_metrics), usage=COALESCE(?, usage),"
                " attempts=attempts+?"
                f" WHERE id=? AND state IN ({marks})",
                (
                    dst.value,
                    message,
                    stamp,
                    failure[0].value if failure else None,
                    failure[1] if failure else None,
                    _json(public_metrics),
                    _json(usage),
                    1 if new_attempt else 0,
                    evaluation_id,
                    *[s.value for s in sources],
                ),
            )
            if cur.rowcount != 1:
                return False
            if new_attempt:
                db.execute(
                    "INSERT INTO attempts (evaluation_id, n, started_at) SELECT id, attempts, ?"
                    " FROM evaluations WHERE id=?",
                    (stamp, evaluation_id),
                )
            if receipt is not None:
                attempt, envelope, predictions = receipt
                db.execute(
                    "INSERT INTO receipts VALUES (?,?,?,?,?)",
                    (evaluation_id, attempt, json.dumps(envelope), predictions, stamp),
                )
            self._event(db, evaluation_id, dst, message)
            return True

    def set_status(self, evaluation_id: str, message: str) -> None:
        """Say what is happening now without changing state (an event for watchers)."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM evaluations WHERE id=?", (evaluation_id,))
            state = State(row.fetchone()["state"])
            db.execute(
                "UPDATE evaluations SET status_message=?, updated_at=? WHERE id=?",
                (message, _ts(now()), evaluation_id),
            )
            self._event(db, evaluation_id, state, message)

    def record_attempt(
        self,
        evaluation_id: str,
        n: int,
        *,
        handle: str | None = None,
        outcome: str | None = None,
        detail: str = "",
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET handle=COALESCE(?, handle), outcome=COALESCE(?, outcome),"
                " detail=CASE WHEN ?='' THEN detail ELSE ? END,"
                " ended_at=CASE WHEN ? IS NULL THEN ended_at ELSE ? END"
                " WHERE evaluation_id=? AND n=?",
                (handle, outcome, detail, detail, outcome, _ts(now()), evaluation_id, n),
            )

    def attempt_handles(self, evaluation_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT handle FROM attempts WHERE evaluation_id=? AND handle IS NOT NULL",
                (evaluation_id,),
            ).fetchall()
        return [r["handle"] for r in rows]

    def receipt_predictions(self, evaluation_id: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT predictions FROM receipts WHERE evaluation_id=?", (evaluation_id,)
            ).fetchone()
        return None if row is None else row["predictions"]

    def events(self, evaluation_id: str, after_seq: int = 0) -> list[Event]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM events WHERE evaluation_id=? AND seq>? ORDER BY seq",
                (evaluation_id, after_seq),
            ).fetchall()
        return [
            Event(
                seq=r["seq"],
                evaluation_id=r["evaluation_id"],
                state=State(r["state"]),
                message=r["message"],
                at=_dt(r["at"]),
            )
            for r in rows
        ]

    @staticmethod
    def _event(db: sqlite3.Connection, evaluation_id: str, state: State, message: str) -> None:
        db.execute(
            "INSERT INTO events (evaluation_id, state, message, at) VALUES (?,?,?,?)",
            (evaluation_id, state.value, message, _ts(now())),
        )


def _benchmark(row: sqlite3.Row) -> Benchmark:
    d = json.loads(row["definition"])
    return Benchmark(
        name=row["name"],
        dataset=d["dataset"],
        limits=BenchmarkLimits(
            time_limit_s=d["time_limit_s"],
            memory_bytes=d["memory_bytes"],
            cpus=d["cpus"],
            gpus=d["gpus"],
        ),
        missing=MissingPolicy(d["missing"]),
        organizer_public_key=bytes.fromhex(d["organizer_public_key"]) or None,
        created_at=_dt(row["created_at"]),
    )


def _evaluation(row: sqlite3.Row) -> Evaluation:
    return Evaluation(
        id=row["id"],
        seq=row["seq"],
        submission_id=row["submission_id"],
        team=row["team"],
        benchmark=row["benchmark"],
        image_ref=row["image_ref"],
        image_digest=row["image_digest"],
        state=State(row["state"]),
        failure_reason=FailureReason(row["failure_reason"]) if row["failure_reason"] else None,
        failure_message=row["failure_message"],
        status_message=row["status_message"],
        public_metrics=json.loads(row["public_metrics"]) if row["public_metrics"] else None,
        usage=json.loads(row["usage"]) if row["usage"] else None,
        limits=json.loads(row["limits"]) if row["limits"] else None,
        receipt=json.loads(row["envelope"]) if row["envelope"] else None,
        attempts=row["attempts"],
        gpus=row["gpus"],
        created_at=_dt(row["created_at"]),
        updated_at=_dt(row["updated_at"]),
    )


def is_terminal(state: State) -> bool:
    return state in TERMINAL
