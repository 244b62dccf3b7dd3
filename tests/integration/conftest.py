"""Fixtures for the real-engine tier: the Docker client (fails loudly in CI), the test images,
hidden inputs, and an executor whose teardown proves that no container or mount was left."""

from __future__ import annotations

import gc
import os
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import docker
import docker.errors
import pytest

from sandbox.docker_executor import DockerExecutor, DockerExecutorConfig
from sandbox.executor import RunSpec
from tests.integration.sandbox_harness import (
    SAMPLE,
    TEST_LIMITS,
    VIDEOS,
    ImageFactory,
    assert_no_leftovers,
    unavailable,
)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    problem = None
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
        problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        with warnings.catch_warnings():  # docker-py leaves the refused socket to the collector
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        unavailable(problem)
    if os.geteuid() != 0:
        unavailable("the executor mounts a tmpfs per run, which needs root")
    yield client
    client.close()


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> Iterator[ImageFactory]:
    factory = ImageFactory(docker_client)
    yield factory
    factory.remove_all()


@dataclass(frozen=True, slots=True, kw_only=True)
class Inputs:
    videos_dir: Path
    sample: Path


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    videos = tmp_path / "videos"
    videos.mkdir()
    for name, data in VIDEOS.items():
        (videos / name).write_bytes(data)
        (videos / name).chmod(0o444)
    videos.chmod(0o755)
    sample = tmp_path / "sample_submission.csv"
    sample.write_bytes(SAMPLE)
    sample.chmod(0o444)
    return Inputs(videos_dir=videos, sample=sample)


@pytest.fixture
def run_labels() -> dict[str, str]:
    """Labels unique to one test, so only its own containers are ever counted or removed."""
    return {"scorer.test": uuid.uuid4().hex}


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path / "work"


@pytest.fixture
def executor(
    docker_client: docker.DockerClient, work_dir: Path, run_labels: dict[str, str]
) -> Iterator[DockerExecutor]:
    yield DockerExecutor(DockerExecutorConfig(work_dir=work_dir), docker_client)
    assert_no_leftovers(docker_client, work_dir, run_labels)


@pytest.fixture
def make_spec(inputs: Inputs, images: ImageFactory, run_labels: dict[str, str]):  # type: ignore[no-untyped-def]
    def make(case: str, **limits: float) -> RunSpec:
        return RunSpec(
            image_id=images.get(case),
            videos_dir=inputs.videos_dir,
            sample_submission=inputs.sample,
            limits=replace(TEST_LIMITS, **limits),
            env={"SCORER_SUBMISSION_PATH": "/output/submission.csv", "SCORER_TEST_VAR": "42"},
            labels=run_labels,
        )

    return make
