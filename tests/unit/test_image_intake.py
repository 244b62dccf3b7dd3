"""The streaming inspector, its gate and the upload on crafted tarballs: bytes in, verdicts out."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from scorer.images.inspect import ImageRejectedError, InspectCaps, inspect_image, inspect_stream
from scorer.images.receive import Compression, UploadError, UploadProblem
from scorer.images.rewrite import untagged_tail
from scorer.images.upload import Inspected, receive_image
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


class Engine:
    """A sink that keeps what the gate handed on, as the engine's load would read it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.aborted = False

    def put(self, data: bytes) -> None:
        self.data += data

    def abort(self) -> None:
        self.aborted = True


def _outer_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getnames()


def test_the_stream_for_the_engine_carries_no_tags_and_ends_with_the_service_manifest() -> None:
    data = Image(repo_tags=["scorer-selftest:0.1.0"]).tarball(
        extra=[file_member("repositories", b'{"scorer-selftest": {"0.1.0": "x"}}')]
    )
    engine = Engine()
    report = inspect_stream(io.BytesIO(data), CAPS, engine)
    assert "manifest.json" not in _outer_names(bytes(engine.data) + bytes(1024))
    stream = bytes(engine.data) + untagged_tail(report.manifest_entry)
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        names = tar.getnames()
        handle = tar.extractfile("manifest.json")
        assert handle is not None
        manifest = json.loads(handle.read())
    assert names[-1] == "manifest.json" and "repositories" not in names
    assert len(names) == len(set(names))
    assert manifest[0]["RepoTags"] is None
    assert manifest[0]["Config"] == report.manifest_entry["Config"]


class Spy:
    """A source that notes how far the inspector had read whenever the engine got bytes."""

    def __init__(self, data: bytes) -> None:
        self.src = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self.src.read(min(n, 700) if n > 0 else 700)  # odd sizes: headers straddle reads


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([special_member("dev/sda", tarfile.CHRTYPE)], "device file"),
        ([file_member("../../etc/cron.d/x", b"* * * * * root sh")], "escapes its folder"),
        ([special_member("evil", tarfile.SYMTYPE, "/etc/passwd")], "points outside"),
    ],
)
def test_a_bad_outer_member_never_reaches_the_engine(
    extra: list[tuple[tarfile.TarInfo, bytes]], expected: str
) -> None:
    """The engine only ever sees members that passed, under headers the service wrote: what it
    got before the verdict is the members before the bad one, in order."""
    big = tar_bytes([file_member("big", bytes(3 * 1024**2))])
    data = Image(layers=[big]).tarball(extra=extra)
    engine = Engine()
    with pytest.raises(ImageRejectedError, match=expected):
        inspect_stream(Spy(data), CAPS, engine)
    seen = bytes(engine.data)
    assert len(seen) > 3 * 1024**2  # the layer before it did stream on
    assert extra[0][0].name.encode() not in seen
    sent = _members(seen + bytes(1024))
    original = [m.name for m in _members(data)]
    assert [m.name for m in sent] == original[: len(sent)]
    assert all(not (m.isdev() or m.issym() or m.name.startswith("..")) for m in sent)


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getmembers()


def test_the_gate_withholds_the_manifest_wherever_it_sits() -> None:
    image = Image()
    entry, members = image.entry_and_members()
    manifest = file_member("manifest.json", json.dumps([entry]).encode())
    data = tar_bytes([manifest, *members])  # manifest first, not last
    engine = Engine()
    report = inspect_stream(Spy(data), CAPS, engine)
    assert report.config_digest == image.digest()
    assert "manifest.json" not in _outer_names(bytes(engine.data) + bytes(1024))


# --- the upload as a whole ---------------------------------------------------------------------


def _receive(
    sent: bytes,
    *,
    declared: int | None = None,
    sha: str | None = None,
    max_tar_bytes: int = 10 * 1024**2,
    chunk: int = 65536,
    engine: Engine | None = None,
) -> Inspected:
    chunks = [sent[i : i + chunk] for i in range(0, len(sent), chunk)]
    return receive_image(
        chunks,
        declared_size_bytes=len(sent) if declared is None else declared,
        sha256_hex=sha or hashlib.sha256(sent).hexdigest(),
        max_tar_bytes=max_tar_bytes,
        caps=CAPS,
        sink=engine,
    )


@pytest.mark.parametrize(
    ("compress", "kind"),
    [
        (lambda b: b, Compression.NONE),
        (gzip.compress, Compression.GZIP),
        (lambda b: zstandard.ZstdCompressor().compress(b), Compression.ZSTD),
    ],
)
def test_plain_gzip_and_zstd_uploads_reach_the_engine_as_the_same_tar(
    compress: Callable[[bytes], bytes], kind: Compression
) -> None:
    tar = Image().tarball()
    engine = Engine()
    inspected = _receive(compress(tar), engine=engine)
    assert inspected.compression is kind and inspected.tar_bytes == len(tar)
    assert _contents(bytes(engine.data) + bytes(1024)) == {
        name: data for name, data in _contents(tar).items() if name != "manifest.json"
    }
    assert not engine.aborted


def _contents(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def _problem(sent: bytes, **kwargs: Any) -> tuple[UploadProblem, str]:
    with pytest.raises(UploadError) as info:
        _receive(sent, **kwargs)
    return info.value.problem, str(info.value)


def test_a_wrong_sha256_is_refused() -> None:
    problem, message = _problem(Image().tarball(), sha="0" * 64)
    assert problem is UploadProblem.INVALID and "sha256" in message


def test_a_wrong_sha256_outranks_a_verdict_on_the_image() -> None:
    """A rejection is recorded against the sha256: only an intact upload may earn one."""
    engine = Engine()
    problem, message = _problem(Image(architecture="arm64").tarball(), sha="0" * 64, engine=engine)
    assert problem is UploadProblem.INVALID and "sha256" in message
    assert engine.aborted


def test_a_truncated_upload_is_refused() -> None:
    sent = Image().tarball()
    problem, message = _problem(sent[:1000], declared=len(sent))
    assert problem is UploadProblem.INVALID and "ended after 1000" in message


def test_a_truncated_gzip_upload_is_refused() -> None:
    sent = gzip.compress(Image().tarball())
    problem, message = _problem(sent[: len(sent) // 2], declared=len(sent))
    assert problem is UploadProblem.INVALID and "declared bytes" in message


def test_a_corrupt_gzip_upload_is_refused() -> None:
    sent = bytearray(gzip.compress(Image().tarball()))
    sent[len(sent) // 2 : len(sent) // 2 + 64] = bytes(64)
    with pytest.raises((UploadError, ImageRejectedError)):
        _receive(bytes(sent))


def test_data_after_a_compressed_stream_is_refused() -> None:
    problem, message = _problem(gzip.compress(Image().tarball()) + b"junk")
    assert problem is UploadProblem.INVALID
    assert "after its compressed stream" in message or "corrupt" in message


def test_a_gzip_bomb_stops_at_the_cap() -> None:
    bomb = gzip.compress(bytes(64 * 1024**2))
    problem, _ = _problem(bomb, max_tar_bytes=4 * 1024**2)
    assert problem is UploadProblem.TOO_LARGE


def test_a_zstd_bomb_stops_at_the_cap() -> None:
    bomb = zstandard.ZstdCompressor().compress(bytes(64 * 1024**2))
    problem, _ = _problem(bomb, max_tar_bytes=4 * 1024**2)
    assert problem is UploadProblem.TOO_LARGE


def test_a_rejected_image_aborts_the_engine_stream_then_checks_the_rest() -> None:
    engine = Engine()
    with pytest.raises(ImageRejectedError, match="linux/amd64"):
        _receive(Image(architecture="arm64").tarball(), engine=engine, chunk=512)
    assert engine.aborted


def test_a_client_that_goes_away_ends_the_upload() -> None:
    class Gone(Exception):
        pass

    def chunks() -> Iterator[bytes]:
        yield Image().tarball()[:4096]
        raise Gone

    with pytest.raises(Gone):
        receive_image(
            chunks(),
            declared_size_bytes=10**6,
            sha256_hex="0" * 64,
            max_tar_bytes=10**7,
            caps=CAPS,
            sink=Engine(),
        )


# --- where Python's and Go's tar readers could disagree (each found in review, then closed) ----


def _raw_header(name: str, size: int, *, prefix: bytes = b"", magic: bytes = b"") -> bytes:
    """A v7-style header with an optional prefix field (Python honours it, Go does not)."""
    info = tarfile.TarInfo(name)
    info.size = size
    block = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    if magic:
        block[257:265] = magic
    block[345 : 345 + len(prefix)] = prefix
    block[148:156] = b" " * 8
    block[148:155] = f"{sum(block):06o}\0".encode()
    return bytes(block)


def test_a_name_prefix_outside_the_posix_format_is_refused() -> None:
    image = Image()
    entry, members = image.entry_and_members()
    layer = image.layers[0]
    header = _raw_header("layer.tar", len(layer), prefix=b"decoy")
    padded = layer + bytes(-len(layer) % 512)
    body = tar_bytes([*members, file_member("manifest.json", json.dumps([entry]).encode())])
    data = header + padded + body
    with pytest.raises(ImageRejectedError, match="prefix outside the POSIX format"):
        inspect_stream(io.BytesIO(data), CAPS, Engine())


def _pax_tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out.getvalue()


def test_global_extended_headers_are_refused() -> None:
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"path": "decoy"}
    ) as tar:
        info, data = file_member("x", b"x")
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ImageRejectedError, match="global extended headers"):
        inspect_stream(io.BytesIO(out.getvalue()), CAPS, Engine())


@pytest.mark.parametrize("record", ["GNU.sparse.realsize", "GNU.sparse.name", "hdrcharset"])
def test_pax_records_the_engine_reads_otherwise_are_refused_in_a_layer(record: str) -> None:
    info, data = file_member("zeros", bytes(1024))
    info.pax_headers = {record: "0" if "size" in record else "BINARY" if "char" in record else "x"}
    image = Image(layers=[_pax_tar([(info, data)])])
    with pytest.raises(ImageRejectedError, match=f"PAX record '{record}'"):
        inspect_stream(io.BytesIO(image.tarball()), CAPS, Engine())


def test_an_extended_header_too_large_to_read_is_refused() -> None:
    info, data = file_member("x" * 20_000, b"x")  # a 20 kB PAX path
    image = Image(layers=[_pax_tar([(info, data)])])
    with pytest.raises(ImageRejectedError, match="extended header of"):
        inspect_stream(io.BytesIO(image.tarball()), CAPS, Engine())


@pytest.mark.parametrize("link_first", [True, False])
def test_a_member_under_an_outer_symlink_is_refused(link_first: bool) -> None:
    """L -> M, then L/layer.tar: the engine would write through the link over M/layer.tar."""
    image = Image()
    entry, members = image.entry_and_members()
    layer_path = entry["Layers"][0]
    folder = layer_path.split("/")[0]
    link = special_member("L", tarfile.SYMTYPE, folder)
    swap = file_member("L/layer.tar", tar_bytes([file_member("evil", b"x")]))
    extra = [link, swap] if link_first else [swap, link]
    manifest = file_member("manifest.json", json.dumps([entry]).encode())
    with pytest.raises(ImageRejectedError, match="symlink"):
        inspect_stream(io.BytesIO(tar_bytes([*members, *extra, manifest])), CAPS, Engine())


def test_a_second_gzip_member_in_a_layer_is_read_as_the_engine_reads_it() -> None:
    """Go's gzip reader takes concatenated members; so does the inspector."""
    first = gzip.compress(tar_bytes([file_member("ok", b"x")])[:1024])  # no end-of-archive
    second = gzip.compress(tar_bytes([file_member("/abs", b"x")]))
    image = Image(layers=[first + second])
    with pytest.raises(ImageRejectedError, match="absolute path"):
        inspect_stream(io.BytesIO(image.tarball()), CAPS, Engine())


def test_data_after_a_gzip_layer_is_refused() -> None:
    image = Image(layers=[gzip.compress(tar_bytes([file_member("ok", b"x")])) + b"junk"])
    with pytest.raises(ImageRejectedError, match="after its gzip stream"):
        inspect_stream(io.BytesIO(image.tarball()), CAPS, Engine())


def test_a_gzip_layer_is_walked_and_matches_its_diff_id() -> None:
    image = Image(layers=[gzip.compress(tar_bytes([file_member("ok", b"x")]))])
    report = inspect_stream(io.BytesIO(image.tarball()), CAPS, Engine())
    assert report.config_digest == image.digest() and report.uncompressed_bytes == 1


def test_a_gzip_layer_that_does_not_match_its_diff_id_is_refused() -> None:
    """What was walked must be what the engine unpacks: a gzip layer is hashed as decompressed.
    (A plain layer reaches the engine byte for byte, and the engine checks its diff_id.)"""
    image = Image(layers=[gzip.compress(tar_bytes([file_member("ok", b"x")]))])
    config = json.loads(image.config())
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    with pytest.raises(ImageRejectedError, match="diff_id"):
        inspect_stream(
            io.BytesIO(
                Image(layers=image.layers, raw_config=json.dumps(config).encode()).tarball()
            ),
            CAPS,
            Engine(),
        )


@pytest.mark.parametrize("magic", [b"BZh91AY", b"\xfd7zXZ\x00\x00", b"\x50\x2a\x4d\x18\x00\x00"])
def test_layers_in_compressions_the_inspector_does_not_read_are_refused(magic: bytes) -> None:
    layer = magic + bytes(1024)
    with pytest.raises(ImageRejectedError, match="only plain and gzip"):
        inspect_stream(io.BytesIO(Image(layers=[layer]).tarball()), CAPS, Engine())


def test_a_negative_size_is_refused() -> None:
    image = Image()
    data = bytearray(image.tarball())
    at = data.index(image.config()[:20]) - 512  # the config member's header
    data[at + 124 : at + 136] = b"\xff" * 12  # base-256 -1
    data[at + 148 : at + 156] = b" " * 8
    data[at + 148 : at + 155] = f"{sum(data[at : at + 512]):06o}\0".encode()
    with pytest.raises(ImageRejectedError, match="negative size"):
        inspect_stream(io.BytesIO(bytes(data)), CAPS, Engine())
