"""FakeExecutor behaves like the real executor where the service can tell the difference."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sandbox.executor import (
    Executor,
    ExecutorError,
    ImageInfo,
    ImageNotFoundError,
    Limits,
    OutputFileStatus,
    RunSpec,
)
from sandbox.testing import DEFAULT_RUN, FakeExecutor, FakeRun

IMAGE = ImageInfo(id="sha256:" + "a" * 64, user="", volumes=(), architecture="amd64", os="linux")
LIMITS = Limits(time_limit_s=5.0, memory_bytes=1 << 30, cpus=1.0, output_bytes=100)


def _spec(**overrides: object) -> RunSpec:
    fields: dict[str, object] = {
        "image_id": IMAGE.id,
        "videos_dir": Path("/videos"),
        "sample_submission": Path("/sample.csv"),
        "limits": LIMITS,
        "labels": {"scorer.instance": "one"},
    }
    return RunSpec(**(fields | overrides))  # type: ignore[arg-type]


def _fake(run: FakeRun = DEFAULT_RUN) -> FakeExecutor:
    fake = FakeExecutor()
    fake.add_image("team/detector:v1", IMAGE, run)
    return fake


def test_fake_satisfies_the_executor_protocol() -> None:
    """FakeExecutor can stand wherever an Executor is expected."""
    executor: Executor = _fake()
    assert executor.resolve_image("team/detector:v1") == IMAGE


def test_images_resolve_by_reference_and_id_and_nothing_else() -> None:
    """A registered tag and its id resolve; anything else is ImageNotFoundError, also on submit."""
    fake = _fake()
    assert fake.resolve_image(IMAGE.id) == IMAGE
    with pytest.raises(ImageNotFoundError):
        fake.resolve_image("team/other:v1")
    with pytest.raises(ImageNotFoundError):
        fake.submit(_spec(image_id="sha256:" + "b" * 64))


def test_a_scripted_run_returns_its_output_and_records_the_spec() -> None:
    """The submitted spec is recorded by value and the scripted bytes come back OK."""
    fake = _fake(FakeRun(output=b"filename,label\na.mp4,0.9\n", peak_memory_bytes=42))
    spec = _spec(env={"SCORER_NUM_VIDEOS": "1"})
    handle = fake.submit(spec)
    assert fake.observe(handle, 1.0).exited
    result = fake.collect(handle)
    assert (result.exit_code, result.output_status, result.output) == (
        0,
        OutputFileStatus.OK,
        b"filename,label\na.mp4,0.9\n",
    )
    assert (result.killed, result.peak_memory_bytes, result.runtime) == (False, 42, "fake")
    assert fake.specs == [spec]
    assert fake.active == frozenset()


@pytest.mark.parametrize(
    ("run", "status"),
    [
        (FakeRun(output=None), OutputFileStatus.MISSING),
        (FakeRun(output=b"x" * 101), OutputFileStatus.TOO_LARGE),
        (FakeRun(output=b"x" * 100), OutputFileStatus.OK),
        (FakeRun(output_status=OutputFileStatus.NOT_REGULAR), OutputFileStatus.NOT_REGULAR),
    ],
)
def test_output_status_follows_the_cap_like_the_real_sandbox(
    run: FakeRun, status: OutputFileStatus
) -> None:
    """No output is MISSING, over output_bytes is TOO_LARGE, a forced status wins."""
    fake = _fake(run)
    result = fake.collect(fake.submit(_spec()))
    assert result.output_status is status
    assert (result.output is None) is (status is not OutputFileStatus.OK)


def test_a_run_takes_its_scripted_duration() -> None:
    """observe() blocks for the run's duration, then reports its exit code."""
    fake = _fake(FakeRun(duration_s=0.2, exit_code=3))
    handle = fake.submit(_spec())
    begun = time.monotonic()
    assert not fake.observe(handle, 0.05).exited
    observation = fake.observe(handle, 5.0)
    assert (observation.exited, observation.exit_code) == (True, 3)
    assert 0.15 < time.monotonic() - begun < 1.0
    assert fake.collect(handle).exit_code == 3


def test_a_hanging_run_blocks_until_cancelled_from_another_thread() -> None:
    """A hanging run really blocks observe(); cancel() releases it as killed with 137."""
    fake = _fake(FakeRun(hang=True))
    handle = fake.submit(_spec())
    assert not fake.observe(handle, 0.05).exited
    threading.Timer(0.1, fake.cancel, args=(handle,)).start()
    begun = time.monotonic()
    assert fake.observe(handle, 10.0).exited
    assert time.monotonic() - begun < 2.0
    result = fake.collect(handle)
    assert (result.killed, result.exit_code, result.output_status) == (
        True,
        137,
        OutputFileStatus.OK,
    )
    assert fake.cancelled == [handle]


def test_cancel_after_a_natural_exit_does_not_mark_the_run_killed() -> None:
    """Cancelling a finished run is a no-op, as with the real engine."""
    fake = _fake(FakeRun(exit_code=0))
    handle = fake.submit(_spec())
    fake.observe(handle, 1.0)
    fake.cancel(handle)
    fake.cancel("no-such-handle")
    result = fake.collect(handle)
    assert (result.killed, result.exit_code) == (False, 0)


def test_collecting_a_live_run_kills_it() -> None:
    """collect() before exit returns a killed run, like the real executor."""
    fake = _fake(FakeRun(hang=True))
    result = fake.collect(fake.submit(_spec()))
    assert result.killed and result.exit_code == 137


def test_behaviour_can_depend_on_the_spec() -> None:
    """A behaviour function sees the RunSpec (e.g. to react to limits or env)."""
    fake = _fake()
    fake.behave(IMAGE.id, lambda spec: FakeRun(exit_code=int(spec.env["CODE"])))
    assert fake.collect(fake.submit(_spec(env={"CODE": "7"}))).exit_code == 7


def test_scripted_failures_raise_then_recover() -> None:
    """fail('submit', 2) makes exactly the next two submits raise ExecutorError."""
    fake = _fake()
    fake.fail("submit", times=2)
    for _ in range(2):
        with pytest.raises(ExecutorError):
            fake.submit(_spec())
    handle = fake.submit(_spec())
    fake.fail("collect")
    with pytest.raises(ExecutorError):
        fake.collect(handle)
    assert fake.collect(handle).exit_code == 0
    assert len(fake.specs) == 1


def test_unknown_handles_are_an_executor_error() -> None:
    """observe/collect of a handle the fake never issued raise ExecutorError."""
    fake = _fake()
    with pytest.raises(ExecutorError):
        fake.observe("nope", 0.0)
    with pytest.raises(ExecutorError):
        fake.collect("nope")


def test_reap_removes_matching_leftovers_except_kept_ones() -> None:
    """reap() drops uncollected runs carrying the labels, keeping those it is told to."""
    fake = _fake(FakeRun(hang=True))
    kept = fake.submit(_spec())
    lost = fake.submit(_spec())
    other = fake.submit(_spec(labels={"scorer.instance": "two"}))
    assert fake.reap({"scorer.instance": "one"}, keep=frozenset({kept})) == 1
    assert fake.active == frozenset({kept, other})
    with pytest.raises(ExecutorError):
        fake.collect(lost)
