"""Cancel, retries, recovery after a crash, dataset integrity, GPU exclusivity, bad requests."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from sandbox.executor import ExecutorError, Limits, RunSpec
from sandbox.testing import FakeExecutor, FakeRun
from scorer.client import ClientError
from scorer.core.lifecycle import State
from scorer.errors import PermissionDeniedError
from scorer.models import Evaluation
from scorer.server import _loopback_only
from scorer.store import SqliteJobStore, now
from scorer.v1 import scorer_pb2 as pb
from tests.component.conftest import (
    GOOD_RUN,
    IMAGE_ID,
    Harness,
    image_info,
    start_harness,
    stop_harness,
)

HANG = FakeRun(hang=True)


def _hanging(harness: Harness, ref: str = "team/hang:1") -> str:
    harness.executor.add_image(ref, image_info("sha256:" + "99" * 32), HANG)
    return ref


def test_cancel_kills_a_running_container(harness: Harness) -> None:
    """Cancelling a RUNNING evaluation ends it CANCELLED and kills its container at once."""
    ev = harness.submit("c-run", image=_hanging(harness))
    harness.wait_state(ev.id, "RUNNING")
    reply = harness.client.call(
        harness.client.evaluations.CancelEvaluation, pb.CancelEvaluationRequest(id=ev.id)
    )
    assert reply.state == pb.CANCELLED
    deadline = time.monotonic() + 5
    while not harness.executor.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    assert harness.executor.cancelled
    time.sleep(0.3)
    final = harness.store.get(ev.id)
    assert final is not None and final.state is State.CANCELLED and final.receipt is None
    assert not harness.executor.active


def test_cancel_works_while_queued_and_is_a_no_op_when_terminal(
    tmp_path: Path, executor: FakeExecutor
) -> None:
    """A QUEUED evaluation cancels without running; a finished one is returned unchanged."""
    tmp_path.chmod(0o755)
    h = start_harness(tmp_path, executor, cpu_slots=1)
    try:
        blocker = h.submit("blocker", image=_hanging(h))
        h.wait_state(blocker.id, "RUNNING")
        queued = h.submit("queued")
        reply = h.client.call(
            h.client.evaluations.CancelEvaluation, pb.CancelEvaluationRequest(id=queued.id)
        )
        assert reply.state == pb.CANCELLED
        again = h.client.call(
            h.client.evaluations.CancelEvaluation, pb.CancelEvaluationRequest(id=queued.id)
        )
        assert again.state == pb.CANCELLED
        h.client.call(
            h.client.evaluations.CancelEvaluation, pb.CancelEvaluationRequest(id=blocker.id)
        )
        assert len([s for s in executor.specs if s.image_id == "sha256:" + "ab" * 32]) == 0
    finally:
        stop_harness(h)


def test_an_infrastructure_failure_is_retried_and_then_succeeds(harness: Harness) -> None:
    """A sandbox failure re-queues the evaluation; the participant never sees it."""
    harness.executor.fail("submit", times=1)
    done = harness.wait(harness.submit("retry").id)
    assert done.state is State.SUCCEEDED and done.attempts == 2
    assert harness.service.telemetry.retries._value.get() == 1


def test_infrastructure_failures_stop_after_the_budget(harness: Harness) -> None:
    """After max_attempts infrastructure failures the evaluation FAILS with INFRASTRUCTURE."""
    harness.executor.fail("submit", times=3, error=ExecutorError("engine down"))
    done = harness.wait(harness.submit("doomed").id)
    assert done.failure_reason is not None
    assert done.failure_reason.value == "INFRASTRUCTURE" and done.attempts == 3
    assert done.receipt is None and "engine down" not in done.failure_message


def test_a_changed_video_fails_with_dataset_integrity(harness: Harness) -> None:
    """A hidden file changed after registration is never silently scored."""
    (harness.videos / "clip03.mp4").write_bytes(b"tampered")
    done = harness.wait(harness.submit("tamper").id)
    assert done.failure_reason is not None and done.failure_reason.value == "DATASET_INTEGRITY"
    assert "clip03" not in done.failure_message and done.receipt is None
    assert not harness.executor.specs


def test_a_run_interrupted_by_a_crash_is_recovered_with_exactly_one_receipt(
    tmp_path: Path, executor: FakeExecutor
) -> None:
    """Killed mid-run and restarted: the container is reaped, the run retried, one receipt."""
    tmp_path.chmod(0o755)
    first = start_harness(tmp_path, executor)
    signer, instance = first.signer, first.service.instance_id
    stop_harness(first)
    # What a process killed mid-run leaves behind: a RUNNING row and a labelled live container.
    store = SqliteJobStore(first.config.db_path)
    ev, _ = store.create_evaluation(
        Evaluation(
            id="ev_crashed",
            seq=0,
            submission_id="crash",
            team="team-a",
            benchmark="bench",
            image_ref="team/img:1",
            image_digest=IMAGE_ID,
            state=State.QUEUED,
            gpus=0,
            created_at=now(),
            updated_at=now(),
        )
    )
    store.transition(ev.id, State.QUEUED, State.PREPARING, new_attempt=True)
    store.transition(ev.id, State.PREPARING, State.RUNNING)
    orphan = executor.submit(
        RunSpec(
            image_id=IMAGE_ID,
            videos_dir=first.videos,
            sample_submission=first.videos / "x",
            limits=Limits(time_limit_s=60, memory_bytes=2**30, cpus=1),
            labels={"scorer.instance": instance, "scorer.evaluation_id": ev.id},
        )
    )
    store.record_attempt(ev.id, 1, handle=orphan)
    store.close()
    executor.behave(IMAGE_ID, GOOD_RUN)
    second = start_harness(tmp_path, executor, signer=signer, register=False)
    try:
        done = second.wait(ev.id)
        assert done.state is State.SUCCEEDED and done.attempts == 2
        rows = second.store._db.execute(
            "SELECT COUNT(*) FROM receipts WHERE evaluation_id=?", (ev.id,)
        ).fetchone()
        assert rows[0] == 1
        assert orphan not in executor.active and not executor.active
    finally:
        stop_harness(second)


def test_gpus_are_held_exclusively_in_fifo_order(harness: Harness) -> None:
    """Two 1-GPU runs get different GPUs; a third waits QUEUED until one frees."""
    ref = _hanging(harness)
    harness.add_benchmark("gpu", gpus=1)
    evs = [harness.submit(f"g-{i}", benchmark="gpu", image=ref) for i in range(3)]
    harness.wait_state(evs[0].id, "RUNNING")
    harness.wait_state(evs[1].id, "RUNNING")
    assert harness.store.get(evs[2].id).state is State.QUEUED  # type: ignore[union-attr]
    gpus = [s.gpus.indices for s in harness.executor.specs]
    assert sorted(gpus) == [(0,), (1,)]
    harness.service.cancel(evs[0].id)
    harness.wait_state(evs[2].id, "RUNNING")
    assert harness.executor.specs[-1].gpus.indices == gpus[0]


BAD_REQUESTS = [
    (
        "empty submission id",
        {"submission_id": "", "benchmark": "bench", "team": "t", "image": "team/img:1"},
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "control char in team",
        {"submission_id": "a", "benchmark": "bench", "team": "t\x00", "image": "team/img:1"},
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "empty image",
        {"submission_id": "b", "benchmark": "bench", "team": "t", "image": ""},
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "unknown benchmark",
        {"submission_id": "c", "benchmark": "nope", "team": "t", "image": "team/img:1"},
        grpc.StatusCode.NOT_FOUND,
    ),
    (
        "image not in the engine",
        {"submission_id": "d", "benchmark": "bench", "team": "t", "image": "team/absent:1"},
        grpc.StatusCode.NOT_FOUND,
    ),
]


@pytest.mark.parametrize(("case", "fields", "code"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_submissions_get_the_right_status_code(
    harness: Harness, case: str, fields: dict[str, str], code: grpc.StatusCode
) -> None:
    """Caller mistakes are INVALID_ARGUMENT or NOT_FOUND, never UNKNOWN or INTERNAL."""
    with pytest.raises(ClientError) as err:
        harness.client.submit(**fields)
    assert err.value.code == code, str(err.value)
    assert harness.store.get_by_submission(fields["submission_id"]) is None


def test_admin_and_lookup_errors_map_to_status_codes(harness: Harness) -> None:
    """Unknown ids, bad paths, redefinitions and bad keys each get their own code."""
    c = harness.client
    cases = [
        (
            c.evaluations.GetEvaluation,
            pb.GetEvaluationRequest(id="ev_nope"),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            c.evaluations.ListEvaluations,
            pb.ListEvaluationsRequest(page_token="zz"),  # noqa: S106 -- a page token, not a secret
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            c.evaluations.ListEvaluations,
            pb.ListEvaluationsRequest(page_size=10_000),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            c.admin.AddDataset,
            pb.AddDatasetRequest(name="x", videos_dir="relative/path"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            c.admin.AddDataset,
            pb.AddDatasetRequest(name="bad name!", videos_dir="/tmp"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            c.admin.AddDataset,
            pb.AddDatasetRequest(
                name="x",
                videos_dir=str(harness.videos),
                labels_csv=b"filename,label\nnope.mp4,FAKE\n",
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            c.admin.AddBenchmark,
            pb.AddBenchmarkRequest(name="b2", dataset="missing"),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            c.admin.AddBenchmark,
            pb.AddBenchmarkRequest(
                name="bench", dataset="videos", limits=pb.Limits(time_limit_seconds=5)
            ),
            grpc.StatusCode.ALREADY_EXISTS,
        ),
        (
            c.admin.AddBenchmark,
            pb.AddBenchmarkRequest(name="b3", dataset="videos", limits=pb.Limits(gpus=5)),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            c.admin.AddBenchmark,
            pb.AddBenchmarkRequest(name="b4", dataset="videos", organizer_public_key=b"short"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (c.admin.VerifyDataset, pb.VerifyDatasetRequest(name="missing"), grpc.StatusCode.NOT_FOUND),
    ]
    for method, request, code in cases:
        with pytest.raises(ClientError) as err:
            c.call(method, request)
        assert err.value.code == code, (request, str(err.value))


def test_list_paginates_in_submission_order(harness: Harness) -> None:
    """ListEvaluations pages through everything once, oldest first."""
    ids = [harness.submit(f"p-{i}").id for i in range(5)]
    seen, token = [], ""
    while True:
        page = harness.client.call(
            harness.client.evaluations.ListEvaluations,
            pb.ListEvaluationsRequest(page_size=2, page_token=token),
        )
        seen += [e.id for e in page.evaluations]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids


class _Peer:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


@pytest.mark.parametrize("peer", ["ipv4:10.0.0.5:4242", "ipv6:[2001:db8::1]:4242"])
def test_admin_calls_are_refused_off_loopback(peer: str) -> None:
    """Until authentication lands, admin calls from another host are PERMISSION_DENIED."""
    with pytest.raises(PermissionDeniedError):
        _loopback_only(_Peer(peer))  # type: ignore[arg-type]
    _loopback_only(_Peer("ipv4:127.0.0.1:4242"))  # type: ignore[arg-type]


def test_re_registering_the_same_dataset_is_a_no_op(harness: Harness) -> None:
    """dataset add is idempotent for identical contents."""
    reply = harness.client.call(
        harness.client.admin.AddDataset,
        pb.AddDatasetRequest(
            name="videos", videos_dir=str(harness.videos), labels_csv=harness.labels_csv
        ),
    )
    assert reply.num_videos == 12


def test_a_waiting_evaluation_says_what_it_waits_for(
    tmp_path: Path, executor: FakeExecutor
) -> None:
    """QUEUED behind a busy CPU slot carries a message naming the slot and its place in line."""
    tmp_path.chmod(0o755)
    h = start_harness(tmp_path, executor, cpu_slots=1)
    try:
        blocker = h.submit("busy", image=_hanging(h))
        h.wait_state(blocker.id, "RUNNING")
        first, second = h.submit("w1"), h.submit("w2")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            messages = [h.client.get(e.id).status_message for e in (first, second)]
            if all("waiting" in m for m in messages):
                break
            time.sleep(0.05)
        assert messages == [
            "queued: waiting for a CPU slot; 0 ahead in the queue",
            "queued: waiting for a CPU slot; 1 ahead in the queue",
        ]
        h.service.cancel(blocker.id)
    finally:
        stop_harness(h)
