"""Evaluations through the real gRPC server: success, verdicts, receipts, idempotency, watch."""

from __future__ import annotations

import math
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import generate_latest

from sandbox.executor import OutputFileStatus
from sandbox.testing import FakeExecutor, FakeRun
from scorer.client import ClientError
from scorer.core.metrics import score_splits, seed_from_id
from scorer.receipts import open_sealed_metrics, verify_envelope
from scorer.v1 import scorer_pb2 as pb
from tests.component.conftest import (
    LABELS,
    NAMES,
    Harness,
    image_info,
    predictions_csv,
    start_harness,
    stop_harness,
)


def test_a_good_run_succeeds_with_public_metrics_and_a_verifiable_receipt(harness: Harness) -> None:
    """SUCCEEDED carries the public split's metrics and a receipt anyone can verify offline."""
    ev = harness.submit("s-1")
    assert ev.state == pb.QUEUED and ev.image_digest == "sha256:" + "ab" * 32
    done = harness.wait(ev.id)
    assert done.state.value == "SUCCEEDED", done
    labels = np.array([LABELS[n][0] for n in NAMES])
    probs = np.array([0.8 if lab else 0.3 for lab in labels])
    expected = score_splits(labels, probs, [LABELS[n][1] for n in NAMES], seed=seed_from_id(ev.id))
    public = harness.client.get(ev.id).public_metrics
    assert public.n == 6
    assert math.isclose(public.log_loss, expected["public"]["log_loss"], rel_tol=1e-12)
    assert public.roc_auc == 1.0 and public.accuracy == 1.0
    statement = verify_envelope(done.receipt, harness.signer.public_key_pem())
    assert statement["subject"][0]["digest"]["sha256"] == "ab" * 32
    predicate = statement["predicate"]
    assert predicate["outcome"]["state"] == "SUCCEEDED"
    assert predicate["submission_id"] == "s-1" and predicate["team"] == "team-a"
    assert "private" not in (predicate["public_metrics"] or {})
    revealed = open_sealed_metrics(predicate["sealed_metrics"], harness.organizer_private)
    assert math.isclose(revealed["private"]["log_loss"], expected["private"]["log_loss"])


def test_the_container_gets_the_contract_environment_and_limits(harness: Harness) -> None:
    """The run spec carries the benchmark's limits, the SCORER_* variables and reaping labels."""
    ev = harness.submit("s-env")
    harness.wait(ev.id)
    spec = harness.executor.specs[-1]
    assert spec.limits.time_limit_s == 30 and spec.limits.memory_bytes == 2**30
    assert spec.env["SCORER_NUM_VIDEOS"] == "12"
    assert spec.env["SCORER_SUBMISSION_PATH"] == "/output/submission.csv"
    assert spec.labels["scorer.evaluation_id"] == ev.id
    assert spec.videos_dir == harness.videos
    assert spec.gpus.indices == ()


def test_submission_ids_are_idempotent_and_never_reused_for_something_else(
    harness: Harness,
) -> None:
    """The same request twice is one evaluation; a different request with the same id is refused."""
    first = harness.client.submit(
        submission_id="dup", benchmark="bench", team="team-a", image="team/img:1"
    )
    again = harness.client.submit(
        submission_id="dup", benchmark="bench", team="team-a", image="team/img:1"
    )
    assert first.created and not again.created
    assert first.evaluation.id == again.evaluation.id
    with pytest.raises(ClientError) as err:
        harness.client.submit(
            submission_id="dup", benchmark="bench", team="team-b", image="team/img:1"
        )
    assert err.value.code == grpc.StatusCode.ALREADY_EXISTS


VERDICTS = [
    ("nonzero exit", FakeRun(exit_code=3, output=predictions_csv()), "NONZERO_EXIT"),
    ("no output", FakeRun(output=None), "MISSING_OUTPUT"),
    (
        "symlink or fifo",
        FakeRun(output_status=OutputFileStatus.NOT_REGULAR, output=None),
        "INVALID_OUTPUT",
    ),
    (
        "too large",
        FakeRun(output_status=OutputFileStatus.TOO_LARGE, output=None),
        "OUTPUT_TOO_LARGE",
    ),
    (
        "full /output, valid file",
        FakeRun(output=predictions_csv(), output_full=True),
        "OUTPUT_TOO_LARGE",
    ),
    ("oom", FakeRun(exit_code=137, oom_killed=True, output=None), "OUT_OF_MEMORY"),
    ("timeout beats oom", FakeRun(hang=True, oom_killed=True), "TIMEOUT"),
    ("nan", FakeRun(output=predictions_csv(dict.fromkeys(NAMES, math.nan))), "INVALID_OUTPUT"),
    ("out of range", FakeRun(output=predictions_csv(dict.fromkeys(NAMES, 1.5))), "INVALID_OUTPUT"),
    ("missing rows", FakeRun(output=b"filename,label\nclip00.mp4,0.5\n"), "INVALID_OUTPUT"),
    (
        "unknown names",
        FakeRun(output=predictions_csv({**dict.fromkeys(NAMES, 0.5), "x.mp4": 0.5})),
        "INVALID_OUTPUT",
    ),
    ("bad header", FakeRun(output=b"name,prob\n"), "INVALID_OUTPUT"),
]


@pytest.mark.parametrize(("case", "run", "reason"), VERDICTS, ids=[v[0] for v in VERDICTS])
def test_each_participant_failure_gets_its_reason_and_an_attested_receipt(
    harness: Harness, case: str, run: FakeRun, reason: str
) -> None:
    """A participant's failure is a verdict with a safe message and a receipt, not an error."""
    slug = case.replace(" ", "-").replace("/", "").replace(",", "")
    harness.executor.add_image(f"team/{slug}:1", image_info("sha256:" + "cd" * 32), run)
    harness.add_benchmark("quick", time_limit_s=0.5)
    ev = harness.submit(f"v-{slug}", benchmark="quick", image=f"team/{slug}:1")
    done = harness.wait(ev.id)
    assert done.state.value == "FAILED" and done.failure_reason is not None
    assert done.failure_reason.value == reason, done.failure_message
    assert not any(name in done.failure_message for name in NAMES)
    statement = verify_envelope(done.receipt, harness.signer.public_key_pem())
    assert statement["predicate"]["outcome"]["failure_reason"] == reason
    assert statement["predicate"]["public_metrics"] is None


def test_impute_policy_fills_missing_rows_and_says_how_many(harness: Harness) -> None:
    """Under --missing-predictions impute, absent rows score as 0.5 and are counted."""
    harness.executor.add_image(
        "team/partial:1",
        image_info("sha256:" + "ef" * 32),
        FakeRun(output=predictions_csv(dict.fromkeys(NAMES[:10], 0.9))),
    )
    harness.add_benchmark("lenient", impute=True)
    ev = harness.submit("imp", benchmark="lenient", image="team/partial:1")
    done = harness.wait(ev.id)
    assert done.state.value == "SUCCEEDED"
    assert harness.client.get(ev.id).public_metrics.imputed == 2


def test_watch_streams_every_state_until_terminal(harness: Harness) -> None:
    """WatchEvaluation yields QUEUED through SUCCEEDED in order, then ends."""
    ev = harness.submit("w-1")
    states = [pb.EvaluationState.Name(e.evaluation.state) for e in harness.client.watch(ev.id)]
    order = ["QUEUED", "PREPARING", "RUNNING", "SCORING", "SUCCEEDED"]
    assert [s for s in order if s in states] == order
    assert states[-1] == "SUCCEEDED"


def test_metrics_count_outcomes(harness: Harness) -> None:
    """The Prometheus registry counts finished evaluations by state."""
    harness.wait(harness.submit("m-1").id)
    expected = 'scorer_evaluations_finished_total{reason="",state="SUCCEEDED"} 1.0'
    deadline = time.monotonic() + 5  # counted by the run thread just after the state commits
    text = ""
    while time.monotonic() < deadline and expected not in text:
        text = generate_latest(harness.service.telemetry.registry).decode()
        time.sleep(0.02)
    assert expected in text
    assert "scorer_evaluations_submitted_total 1.0" in text


def test_a_foreign_architecture_is_rejected_with_a_receipt(harness: Harness) -> None:
    """An arm64 image ends IMAGE_REJECTED before anything runs."""
    harness.executor.add_image("team/arm:1", image_info("sha256:" + "12" * 32, arch="arm64"))
    done = harness.wait(harness.submit("arm", image="team/arm:1").id)
    assert done.failure_reason is not None and done.failure_reason.value == "IMAGE_REJECTED"
    assert "arm64" in done.failure_message and done.receipt is not None
    assert not [s for s in harness.executor.specs if s.image_id == "sha256:" + "12" * 32]


def test_list_benchmarks_describes_limits_splits_and_dataset(harness: Harness) -> None:
    """ListBenchmarks tells the platform what each benchmark runs against."""
    reply = harness.client.call(
        harness.client.evaluations.ListBenchmarks, pb.ListBenchmarksRequest()
    )
    (bench,) = [b for b in reply.benchmarks if b.name == "bench"]
    assert bench.dataset == "videos" and list(bench.splits) == ["private", "public"]
    assert bench.limits.time_limit_seconds == 30 and bench.missing_predictions == pb.FAIL
    assert len(bench.dataset_digest) == 64 and len(bench.organizer_public_key) == 32


def test_public_key_is_served_as_pem_with_its_keyid(harness: Harness) -> None:
    """GetPublicKey returns the signing key, whose keyid is the sha256 of the raw key."""
    key = harness.client.call(harness.client.audit.GetPublicKey, pb.GetPublicKeyRequest())
    assert key.keyid == harness.signer.keyid and key.algorithm == "ed25519"
    assert key.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")


def test_cpu_slots_run_evaluations_in_fifo_order(tmp_path: Path, executor: FakeExecutor) -> None:
    """With one CPU slot, evaluations run one at a time in submission order."""
    tmp_path.chmod(0o755)
    h = start_harness(tmp_path, executor, cpu_slots=1)
    try:
        ids = [h.submit(f"fifo-{i}").id for i in range(4)]
        for evaluation_id in ids:
            h.wait(evaluation_id)
        order = [s.labels["scorer.evaluation_id"] for s in executor.specs]
        assert order == ids
    finally:
        stop_harness(h)


def test_health_and_reflection_are_served(harness: Harness) -> None:
    """grpc.health.v1 answers SERVING and reflection lists the scorer services."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    assert harness.client.serving()
    stub = reflection_pb2_grpc.ServerReflectionStub(harness.client._channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    reply = next(iter(stub.ServerReflectionInfo(iter([request]))))
    names = {s.name for s in reply.list_services_response.service}
    assert {"scorer.v1.EvaluationService", "grpc.health.v1.Health"} <= names
