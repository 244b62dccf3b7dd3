"""The tarball inspector and the upload spool on crafted tarballs: bytes in, verdicts out."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from scorer.images.inspect import ImageRejectedError, InspectCaps, inspect_image
from scorer.images.rewrite import untagged_stream
from scorer.images.spool import Compression, SpoolError, SpoolProblem, spool
from tests.image_tars import Image, file_member, special_member, tar_bytes

CAPS = InspectCaps(max_uncompressed_bytes=10 * 1024**2, max_layers=8)


def _inspect(tmp_path: Path, data: bytes, caps: InspectCaps = CAPS) -> object:
    path = tmp_path / "image.tar"
    path.write_bytes(data)
    return inspect_image(path, caps)


def _rejected(tmp_path: Path, data: bytes, caps: InspectCaps = CAPS) -> str:
    with pytest.raises(ImageRejectedError) as info:
        _inspect(tmp_path, data, caps)
    return str(info.value)


def test_a_good_image_is_reported_with_its_config_digest(tmp_path: Path) -> None:
    image = Image()
    report = _inspect(tmp_path, image.tarball())
    assert report.config_digest == image.digest()  # type: ignore[attr-defined]
    assert report.user == "1000"  # type: ignore[attr-defined]
    assert report.entrypoint == ("/hello",)  # type: ignore[attr-defined]
    assert report.env == ("A=1",)  # type: ignore[attr-defined]
    assert report.layers == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("layer_members", "expected"),
    [
        ([file_member("../escape", b"x")], "escapes its folder"),
        ([file_member("/etc/passwd", b"x")], "absolute path"),
        ([special_member("dev/sda", tarfile.CHRTYPE)], "device file"),
        ([special_member("dev/loop", tarfile.BLKTYPE)], "device file"),
        ([special_member("x", tarfile.LNKTYPE, "../../etc/shadow")], "escapes its folder"),
    ],
)
def test_layer_members_that_escape_or_are_devices_are_refused(
    tmp_path: Path, layer_members: list[tuple[tarfile.TarInfo, bytes]], expected: str
) -> None:
    image = Image(layers=[tar_bytes(layer_members)])
    assert expected in _rejected(tmp_path, image.tarball())


def test_an_outer_member_escaping_the_archive_is_refused(tmp_path: Path) -> None:
    data = Image().tarball(extra=[file_member("../../root/.ssh/authorized_keys", b"k")])
    assert "escapes its folder" in _rejected(tmp_path, data)


def test_an_outer_symlink_pointing_outside_is_refused(tmp_path: Path) -> None:
    data = Image().tarball(extra=[special_member("evil", tarfile.SYMTYPE, "/etc/passwd")])
    assert "points outside" in _rejected(tmp_path, data)


def test_two_images_in_one_tarball_are_refused(tmp_path: Path) -> None:
    data = Image().tarball(also=Image(entrypoint=["/other"]))
    assert "exactly one image" in _rejected(tmp_path, data)


def test_a_foreign_architecture_is_refused(tmp_path: Path) -> None:
    assert "linux/arm64" in _rejected(tmp_path, Image(architecture="arm64").tarball())


def test_an_image_with_nothing_to_run_is_refused(tmp_path: Path) -> None:
    assert "no ENTRYPOINT or CMD" in _rejected(tmp_path, Image(entrypoint=None).tarball())


def test_too_many_layers_are_refused(tmp_path: Path) -> None:
    image = Image(layers=[tar_bytes([file_member(f"f{i}", b"x")]) for i in range(9)])
    assert "9 layers" in _rejected(tmp_path, image.tarball())


def test_a_config_whose_name_is_not_its_hash_is_refused(tmp_path: Path) -> None:
    data = Image(config_name="0" * 64 + ".json").tarball()
    assert "does not match its sha256" in _rejected(tmp_path, data)


def test_a_layer_that_unpacks_beyond_the_cap_is_refused_before_reading_it(tmp_path: Path) -> None:
    """A gzip bomb inside a layer: 64 MiB of zeros compress to ~64 KiB."""
    bomb = tar_bytes([file_member("zeros", bytes(64 * 1024**2))], gz=True)
    assert len(bomb) < 1024**2
    assert "more bytes" in _rejected(tmp_path, Image(layers=[bomb]).tarball())


def test_duplicate_json_keys_are_refused(tmp_path: Path) -> None:
    config = Image().config().replace(b'"os": "linux"', b'"os": "linux", "os": "windows"', 1)
    assert "duplicate keys" in _rejected(tmp_path, Image(raw_config=config).tarball())


def test_nan_in_the_config_is_refused(tmp_path: Path) -> None:
    config = Image().config().replace(b'"os": "linux"', b'"os": "linux", "x": NaN', 1)
    assert "not JSON" in _rejected(tmp_path, Image(raw_config=config).tarball())


def test_the_stream_for_the_engine_carries_no_tags(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    path.write_bytes(Image(repo_tags=["scorer-selftest:0.1.0"]).tarball())
    report = inspect_image(path, CAPS)
    rewritten = b"".join(untagged_stream(path, report.manifest))
    with tarfile.open(fileobj=io.BytesIO(rewritten)) as tar:
        handle = tar.extractfile("manifest.json")
        assert handle is not None
        manifest = json.loads(handle.read())
        assert len(tar.getnames()) == len(set(tar.getnames()))
    assert manifest[0]["RepoTags"] is None
    assert manifest[0]["Config"] == report.manifest.entry["Config"]


# --- the spool -----------------------------------------------------------------------------


def _spool(
    tmp_path: Path,
    sent: bytes,
    *,
    declared: int | None = None,
    sha: str | None = None,
    max_tar_bytes: int = 10 * 1024**2,
    chunk: int = 65536,
) -> object:
    chunks = [sent[i : i + chunk] for i in range(0, len(sent), chunk)]
    return spool(
        chunks,
        directory=tmp_path / "uploads",
        declared_size_bytes=len(sent) if declared is None else declared,
        sha256_hex=sha or hashlib.sha256(sent).hexdigest(),
        max_tar_bytes=max_tar_bytes,
    )


@pytest.mark.parametrize(
    ("compress", "kind"),
    [
        (lambda b: b, Compression.NONE),
        (gzip.compress, Compression.GZIP),
        (lambda b: zstandard.ZstdCompressor().compress(b), Compression.ZSTD),
    ],
)
def test_plain_gzip_and_zstd_uploads_spool_to_the_same_tar(
    tmp_path: Path, compress: object, kind: Compression
) -> None:
    tar = Image().tarball()
    spooled = _spool(tmp_path, compress(tar))  # type: ignore[operator]
    assert spooled.compression is kind  # type: ignore[attr-defined]
    assert spooled.path.read_bytes() == tar  # type: ignore[attr-defined]


def _problem(tmp_path: Path, sent: bytes, **kwargs: object) -> tuple[SpoolProblem, str]:
    with pytest.raises(SpoolError) as info:
        _spool(tmp_path, sent, **kwargs)  # type: ignore[arg-type]
    assert list((tmp_path / "uploads").iterdir()) == []  # no partial file is left behind
    return info.value.problem, str(info.value)


def test_a_wrong_sha256_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    problem, message = _problem(tmp_path, Image().tarball(), sha="0" * 64)
    assert problem is SpoolProblem.INVALID and "sha256" in message


def test_a_truncated_upload_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    sent = Image().tarball()
    problem, message = _problem(tmp_path, sent[:1000], declared=len(sent))
    assert problem is SpoolProblem.INVALID and "ended after 1000" in message


def test_a_truncated_gzip_upload_is_refused(tmp_path: Path) -> None:
    sent = gzip.compress(Image().tarball())
    problem, _ = _problem(tmp_path, sent[: len(sent) // 2], declared=len(sent))
    assert problem is SpoolProblem.INVALID


def test_a_gzip_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    bomb = gzip.compress(bytes(64 * 1024**2))
    problem, _ = _problem(tmp_path, bomb, max_tar_bytes=4 * 1024**2)
    assert problem is SpoolProblem.TOO_LARGE


def test_a_zstd_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    bomb = zstandard.ZstdCompressor().compress(bytes(64 * 1024**2))
    problem, _ = _problem(tmp_path, bomb, max_tar_bytes=4 * 1024**2)
    assert problem is SpoolProblem.TOO_LARGE


def test_a_client_that_goes_away_leaves_no_file(tmp_path: Path) -> None:
    class Gone(Exception):
        pass

    def chunks() -> object:
        yield b"x" * 65536
        raise Gone

    with pytest.raises(Gone):
        spool(
            chunks(),  # type: ignore[arg-type]
            directory=tmp_path / "uploads",
            declared_size_bytes=10**6,
            sha256_hex="0" * 64,
            max_tar_bytes=10**7,
        )
    assert list((tmp_path / "uploads").iterdir()) == []
