"""The sandbox under attack, through the service: a table of hostile images, each submitted to a
real `scorer serve` (one per runtime: runc, then runsc/gVisor), each with its expected verdict,
and after every one the host is checked (health, containers, disk, hidden set, service memory).

The table, in words, with the reasons for every gVisor difference: tests/adversarial/__init__.py.
"""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

import tests.adversarial as table_doc
from sandbox.host_output import mounts_under
from scorer.client import Client
from scorer.convert import evaluation_json
from tests.adversarial.harness import (
    EVALUATION_LABEL,
    OUTPUT_CAP_BYTES,
    CaseImages,
    HiddenSet,
    MiB,
    RssSampler,
    RuntimeService,
    bytes_owned_by,
    disk_usage_bytes,
    make_hidden_set,
    poll_until_finished,
    register,
    rss_bytes,
    tree_digest,
    unique_ports,
    write_config,
)
from tests.integration.sandbox_harness import unavailable

pytestmark = pytest.mark.docker

RUNTIMES = ("runc", "runsc")
LIMITS_S = {"short": 3.0, "slow": 10.0}  # slow: the slow predictor, and growth gVisor slows
MEMORY = "128m"
GRACE_S = 5.0  # the verdict must be out within the time limit plus this, from submission
RSS_BOUND_BYTES = 400 * MiB
# The store keeps each collected submission (up to the cap), and SQLite's WAL may hold it twice.
STATE_GROWTH_BYTES = 2 * OUTPUT_CAP_BYTES + 4 * MiB
# /tmp is shared with other people's concurrent runs (a whole-/tmp `du` grew 60 MB in 3 s), so
# it is measured as what the sandbox's user owns there: where an escape would write.
SANDBOX_UID = 65534
TMP_GROWTH_BYTES = 1 * MiB
LOG_GROWTH_BYTES = 256 * 1024  # the operators' log keeps a bounded tail of container output
CLEAN = "RESULT: clean"


@dataclass(frozen=True, slots=True, kw_only=True)
class Expect:
    state: str
    reason: str | None = None
    logs: tuple[str, ...] = ()  # must appear in the operators' log tail ({videos}, {kernel})
    absent: tuple[str, ...] = ()  # must not appear there


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    name: str  # tests/adversarial/<name>.sh
    expect: Expect
    # gVisor's own truth where it differs (why: the README table); a tuple where gVisor races
    # two limits and either may win, each outcome acceptable and asserted.
    runsc: Expect | tuple[Expect, ...] | None = None
    benchmark: str = "short"
    collected: bool | None = None  # whether the host read a submission (False: never opened)

    def expected(self, runtime: str) -> tuple[Expect, ...]:
        if runtime != "runsc" or self.runsc is None:
            return (self.expect,)
        return self.runsc if isinstance(self.runsc, tuple) else (self.runsc,)


def ok(*logs: str, absent: tuple[str, ...] = ()) -> Expect:
    return Expect(state="SUCCEEDED", logs=logs, absent=absent)


def failed(reason: str, *logs: str, absent: tuple[str, ...] = ()) -> Expect:
    return Expect(state="FAILED", reason=reason, logs=logs, absent=absent)


TIMEOUT, OOM, TOO_LARGE = failed("TIMEOUT"), failed("OUT_OF_MEMORY"), failed("OUTPUT_TOO_LARGE")
NOT_A_FILE = failed("INVALID_OUTPUT")

TABLE = [
    Case(name="correct", expect=ok()),
    Case(name="correct_slow", expect=ok(), benchmark="slow"),
    Case(name="busy_loop", expect=TIMEOUT),
    Case(name="sleep_forever", expect=TIMEOUT),
    Case(name="ignore_term", expect=TIMEOUT),
    Case(name="stop_self", expect=TIMEOUT),
    # gVisor: the bomb's tasks live in the sentry, which needs host threads for them: either the
    # memory limit kills the sandbox (137, OOM) or its threads hit pids_limit and the sentry dies
    # (Go runtime, exit 2, no OOM): a race, about 1 run in 4 ends the second way.
    Case(name="fork_bomb", expect=TIMEOUT, runsc=(OOM, failed("NONZERO_EXIT"))),
    Case(name="memory_hog", expect=OOM),
    # runc kills the child only; gVisor's sentry is the one host process, so the sandbox dies.
    Case(
        name="memory_hog_child",
        expect=failed("OUT_OF_MEMORY", "child ended with 137"),
        runsc=failed("OUT_OF_MEMORY", absent=("child ended",)),
        benchmark="slow",
    ),
    Case(name="fill_tmp", expect=ok(CLEAN, "/tmp held 33554432 bytes", "/dev/shm held 16777216")),
    Case(name="fill_output", expect=TOO_LARGE),
    Case(name="huge_submission", expect=TOO_LARGE),
    Case(name="huge_then_exit1", expect=TOO_LARGE),
    Case(name="sparse_submission", expect=TOO_LARGE, collected=False),
    Case(name="inode_flood", expect=TOO_LARGE, benchmark="slow"),  # gVisor: slow file creation
    Case(name="flood_logs", expect=ok("THE END")),
    Case(name="symlink_shadow", expect=NOT_A_FILE, collected=False),
    Case(name="symlink_data", expect=NOT_A_FILE, collected=False),
    Case(name="hardlink", expect=NOT_A_FILE, collected=False),
    # gVisor keeps a FIFO made on a bind mount inside its sentry: the host sees no file at all.
    Case(
        name="fifo",
        expect=failed("INVALID_OUTPUT", "MKFIFO: rc=0"),
        runsc=failed("MISSING_OUTPUT", "MKFIFO: rc=0"),
        collected=False,
    ),
    Case(name="directory", expect=NOT_A_FILE, collected=False),
    Case(name="network", expect=ok(CLEAN)),
    Case(name="write_hidden", expect=ok(CLEAN)),
    Case(name="search_labels", expect=ok(CLEAN)),
    # gVisor lets the node be made in its own tmpfs, but it opens no device (checked inside).
    Case(name="setuid", expect=ok(CLEAN, "MKNOD: refused"), runsc=ok(CLEAN, "MKNOD: created")),
    # gVisor allows a bare user namespace inside the sentry: no mapping, no mount (checked).
    Case(name="namespaces", expect=ok(CLEAN, "USERNS: no"), runsc=ok(CLEAN, "USERNS: yes")),
    # runc: /proc/self/mountinfo names the hidden set's host folder (a known leak, reported);
    # gVisor shows "/" and its own kernel version.
    Case(
        name="proc_sys",
        expect=ok(CLEAN, "KERNEL: {kernel}", "MOUNTINFO_VIDEOS: {videos}"),
        runsc=ok(CLEAN, "KERNEL: 4.4.0", "MOUNTINFO_VIDEOS: /\n", absent=("{videos}",)),
    ),
    Case(name="valid_then_exit1", expect=failed("NONZERO_EXIT")),
    Case(name="no_output", expect=failed("MISSING_OUTPUT")),
    Case(name="nan_predictions", expect=failed("INVALID_OUTPUT"), collected=True),
]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def host_ports() -> dict[str, tuple[int, int]]:
    """Each runtime's service ports (gRPC, metrics), chosen before the images that probe them."""
    ports = unique_ports(2 * len(RUNTIMES))
    return {rt: (ports[2 * i], ports[2 * i + 1]) for i, rt in enumerate(RUNTIMES)}


@pytest.fixture(scope="session")
def case_images(
    docker_client: docker.DockerClient, host_ports: dict[str, tuple[int, int]]
) -> Iterator[dict[str, str]]:
    images = CaseImages(docker_client, [p for pair in host_ports.values() for p in pair])
    try:
        yield images.build(case.name for case in TABLE)
    finally:
        images.remove_all()


@pytest.fixture(scope="session")
def hidden(tmp_path_factory: pytest.TempPathFactory) -> HiddenSet:
    return make_hidden_set(tmp_path_factory.mktemp("adversarial-hidden"))


@dataclass(slots=True, kw_only=True)
class Served:
    service: RuntimeService
    client: Client
    runtime: str
    baseline: Mapping[str, str]  # the hidden set's tree digest at registration
    evaluations: set[str] = field(default_factory=set)


@pytest.fixture(scope="session", params=RUNTIMES)
def served(
    request: pytest.FixtureRequest,
    docker_client: docker.DockerClient,
    host_ports: dict[str, tuple[int, int]],
    hidden: HiddenSet,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """One `scorer serve` per runtime for the whole session, with the hidden set registered."""
    runtime = str(request.param)
    if runtime not in (docker_client.info().get("Runtimes") or {}):
        unavailable(f"the engine has no {runtime} runtime")
    root = tmp_path_factory.mktemp(f"adversarial-{runtime}")
    service = RuntimeService(
        root / "state",
        root / "serve.log",
        runtime=runtime,
        config=write_config(root / "scorer.toml"),
        ports=host_ports[runtime],
    )
    service.start()
    client = Client(service.address)
    baseline = tree_digest(hidden.root)
    served = Served(service=service, client=client, runtime=runtime, baseline=baseline)
    try:
        register(service, hidden, LIMITS_S, MEMORY)
        yield served
    finally:
        client.close()
        service.stop()
    assert not _our_containers(docker_client, served.evaluations)


# --- the host, observed from outside -----------------------------------------------------------


def _our_containers(client: docker.DockerClient, evaluations: set[str]) -> list[str]:
    found = client.containers.list(all=True, filters={"label": EVALUATION_LABEL})
    return [c.name for c in found if c.labels.get(EVALUATION_LABEL) in evaluations]


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    state_bytes: int
    tmp_bytes: int
    log_bytes: int

    @staticmethod
    def take(service: RuntimeService) -> Usage:
        return Usage(
            state_bytes=disk_usage_bytes(service.state_dir),
            tmp_bytes=bytes_owned_by(Path("/tmp"), SANDBOX_UID, SANDBOX_UID),
            log_bytes=service.log_path.stat().st_size,
        )


def _predicate(envelope: Mapping[str, Any]) -> dict[str, Any]:
    statement = json.loads(base64.b64decode(envelope["payload"]))
    return dict(statement["predicate"])


def _expected_log_loss(hidden: HiddenSet) -> float:
    """Every well-behaved case predicts 0.7; the public split alternates REAL, FAKE."""
    labels = [i % 2 for i in range(hidden.public)]
    return -sum(math.log(0.7 if y else 0.3) for y in labels) / len(labels)


# --- the one test -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", TABLE, ids=[case.name for case in TABLE])
def test_hostile_image_gets_its_verdict_and_the_host_is_untouched(
    case: Case,
    served: Served,
    case_images: dict[str, str],
    hidden: HiddenSet,
    docker_client: docker.DockerClient,
) -> None:
    """Through the service: the row's verdict (per runtime), on time, with a receipt; then the
    service is healthy and small, nothing is left running or mounted, the disk did not grow past
    a bound, and the hidden set is byte-for-byte what was registered."""
    service, runtime = served.service, served.runtime
    allowed, limit_s = case.expected(runtime), LIMITS_S[case.benchmark]
    before = Usage.take(service)
    with RssSampler(service.pid) as rss:
        begun = time.monotonic()
        reply = served.client.submit(
            submission_id=uuid.uuid4().hex,
            benchmark=case.benchmark,
            team="red-team",
            image=case_images[case.name],
        )
        served.evaluations.add(reply.evaluation.id)
        ev = poll_until_finished(served.client, reply.evaluation.id, limit_s + 3 * GRACE_S)
        elapsed_s = time.monotonic() - begun
    found = evaluation_json(ev)
    tail = service.run_log_tail(ev.id) or ""
    context = f"{found}\n--- container output (tail) ---\n{tail}"

    outcome = (found["state"], found["failure_reason"])
    matching = [expect for expect in allowed if (expect.state, expect.reason) == outcome]
    assert matching, f"{outcome} is none of {[(e.state, e.reason) for e in allowed]}\n{context}"
    expect = matching[0]
    for text in expect.logs:
        assert _fill(text, hidden) in tail, context
    for text in expect.absent:
        assert _fill(text, hidden) not in tail, context
    assert elapsed_s <= limit_s + GRACE_S, f"reported after {elapsed_s:.2f} s"
    _assert_receipt(found, case, runtime, hidden)
    _assert_host_intact(served, docker_client, hidden, before)
    assert rss.samples > 0 and rss.peak_bytes < RSS_BOUND_BYTES, rss.peak_bytes


def _fill(text: str, hidden: HiddenSet) -> str:
    return text.replace("{videos}", str(hidden.videos)).replace("{kernel}", os.uname().release)


def _assert_receipt(found: dict[str, Any], case: Case, runtime: str, hidden: HiddenSet) -> None:
    assert found["attempts"] == 1, found  # never an INFRASTRUCTURE retry
    assert found["receipt"] is not None, found
    predicate = _predicate(found["receipt"])
    assert predicate["outcome"]["failure_reason"] == found["failure_reason"]
    assert predicate["runtime"]["runtime"] == runtime  # the sandbox really ran on this runtime
    if case.collected is not None:
        assert (predicate["submission_sha256"] is not None) is case.collected, predicate
    if found["state"] == "SUCCEEDED":
        public = found["public_metrics"]
        assert public["n"] == hidden.public
        assert public["log_loss"] == pytest.approx(_expected_log_loss(hidden))


def _assert_host_intact(
    served: Served, docker_client: docker.DockerClient, hidden: HiddenSet, before: Usage
) -> None:
    service = served.service
    assert served.client.serving(), "the service stopped answering health checks"
    assert not _our_containers(docker_client, served.evaluations)
    assert mounts_under(service.state_dir) == []
    assert list((service.state_dir / "mounts").iterdir()) == []
    assert tree_digest(hidden.root) == served.baseline, "the hidden set changed"
    after = Usage.take(service)
    assert after.state_bytes - before.state_bytes <= STATE_GROWTH_BYTES, (before, after)
    assert after.tmp_bytes - before.tmp_bytes <= TMP_GROWTH_BYTES, (before, after)
    assert after.log_bytes - before.log_bytes <= LOG_GROWTH_BYTES, (before, after)
    assert rss_bytes(service.pid) < RSS_BOUND_BYTES
    assert subprocess.run(["true"], check=False).returncode == 0  # the host can still fork


def test_the_readme_table_lists_every_case_with_its_verdicts() -> None:
    """tests/adversarial/__init__.py documents each row, with gVisor's outcome where it differs."""
    rows = {
        line.split("|")[1].strip(" `"): line
        for line in (table_doc.__doc__ or "").splitlines()
        if line.startswith("| `")
    }
    assert set(rows) == {case.name for case in TABLE}
    for case in TABLE:
        for runtime in RUNTIMES:
            for expect in case.expected(runtime):
                assert (expect.reason or expect.state) in rows[case.name], case.name
        assert (case.runsc is not None) == ("gVisor:" in rows[case.name]), case.name
