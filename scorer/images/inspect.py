"""Inspect a `docker save` tarball as it streams past, before the engine may use any of it.

Exactly one image; manifest.json and the config parsed strictly; linux/amd64; the config's
sha256 is the image id the engine must report after loading; sizes and layer count within caps;
no member escaping its folder, no device file; every layer a tar whose members pass the same
rules. What the image declares is reported.

The tarball is read once, in order, through a `Gate`: a member that passed its checks goes on to
the engine under a header the service writes, and manifest.json, which comes late, is withheld;
the service appends its tag-less copy only once the whole image passed, so the engine cannot
create an image before that.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, cast

from scorer.images.gate import Gate, Sink, Source, Window
from scorer.images.layers import (
    Budget,
    Gunzip,
    ImageRejectedError,
    OverBudgetError,
    StrictInfo,
    check_member,
    layer_kind,
    safe_name,
    walk_layer,
)
from scorer.images.receive import Worker

__all__ = ["ImageRejectedError", "ImageReport", "InspectCaps", "inspect_image", "inspect_stream"]

_MAX_JSON_BYTES = 8 * 1024 * 1024
_MAX_KEPT_BYTES = 64 * 1024 * 1024  # small non-tar members kept for the verdict, all together
# Top-level files the engine reads for names and tags: never handed on as uploaded. The service
# appends a tag-less manifest.json itself; repositories and index.json only carry names.
_WITHHELD = frozenset({"manifest.json", "repositories", "index.json"})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MANIFEST_KEYS = {"Config", "RepoTags", "Layers", "Parent", "LayerSources"}


@dataclass(frozen=True, slots=True, kw_only=True)
class InspectCaps:
    max_uncompressed_bytes: int
    max_layers: int
    max_members: int = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageReport:
    config_digest: str  # "sha256:<hex>": the image id the engine will report
    architecture: str
    os: str
    user: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    exposed_ports: tuple[str, ...]
    volumes: tuple[str, ...]
    layers: int
    uncompressed_bytes: int
    manifest_entry: dict[str, Any]


def _strict_json(data: bytes, what: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ImageRejectedError(f"{what} has duplicate keys")
        return dict(pairs)

    def no_constants(name: str) -> Any:
        raise ImageRejectedError(f"{what} contains {name}, which is not JSON")

    try:
        return json.loads(
            data.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ImageRejectedError(f"{what} is not valid JSON ({exc})") from exc


def _resolve(members: dict[str, tarfile.TarInfo], name: str) -> str:
    """Follow in-archive symlinks (docker save links repeated layers) to a regular file."""
    for _ in range(8):
        member = members.get(name)
        if member is None:
            raise ImageRejectedError(f"the tarball has no member {name!r}")
        if not member.issym():
            if not member.isfile():
                raise ImageRejectedError(f"member {name!r} is not a regular file")
            return name
        # check_member already proved every outer link stays inside the archive.
        name = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
    raise ImageRejectedError(f"member {name!r} is a chain of links")


def _manifest_entry(data: bytes) -> dict[str, Any]:
    manifest = _strict_json(data, "manifest.json")
    if not isinstance(manifest, list) or len(manifest) != 1:
        count = len(manifest) if isinstance(manifest, list) else "no"
        raise ImageRejectedError(f"the tarball must hold exactly one image, not {count}")
    entry = manifest[0]
    if not isinstance(entry, dict) or set(entry) - _MANIFEST_KEYS:
        raise ImageRejectedError("manifest.json has an entry this service does not understand")
    layers = entry.get("Layers")
    if not isinstance(entry.get("Config"), str) or not isinstance(layers, list):
        raise ImageRejectedError("manifest.json must name a Config and a list of Layers")
    if not all(isinstance(layer, str) for layer in layers):
        raise ImageRejectedError("manifest.json's Layers must be paths")
    tags = entry.get("RepoTags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise ImageRejectedError("manifest.json's RepoTags must be a list of names")
    return entry


def _strs(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if isinstance(value, dict):
        return tuple(sorted(str(k) for k in value))
    raise ImageRejectedError(f"the image config's {what} is malformed")


def _report_fields(config: Any, n_layers: int) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise ImageRejectedError("the image config is not a JSON object")
    arch, os_name = config.get("architecture"), config.get("os")
    if (os_name, arch) != ("linux", "amd64"):
        raise ImageRejectedError(
            f"the image is built for {os_name}/{arch}; linux/amd64 is required"
        )
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise ImageRejectedError("the image config has no rootfs of type layers")
    if len(_strs(rootfs.get("diff_ids"), "rootfs")) != n_layers:
        raise ImageRejectedError("the image config and manifest.json disagree on the layers")
    run = config.get("config") or {}
    if not isinstance(run, dict) or not isinstance(run.get("User") or "", str):
        raise ImageRejectedError("the image config's run settings are malformed")
    entrypoint, cmd = _strs(run.get("Entrypoint"), "Entrypoint"), _strs(run.get("Cmd"), "Cmd")
    if not entrypoint and not cmd:
        raise ImageRejectedError("the image declares no ENTRYPOINT or CMD: nothing would run")
    return {
        "architecture": arch,
        "os": os_name,
        "user": run.get("User") or "",
        "entrypoint": entrypoint,
        "cmd": cmd,
        "env": _strs(run.get("Env"), "Env"),
        "exposed_ports": _strs(run.get("ExposedPorts"), "ExposedPorts"),
        "volumes": _strs(run.get("Volumes"), "Volumes"),
    }


def _config_digest(config_path: str, blob: bytes) -> str:
    """sha256 of the config blob, which docker save also uses as the blob's file name."""
    digest = hashlib.sha256(blob).hexdigest()
    stem = config_path.rsplit("/", 1)[-1].removesuffix(".json")
    if _HEX64.match(stem) and stem != digest:
        raise ImageRejectedError("the config's file name does not match its sha256")
    return f"sha256:{digest}"


@dataclass(slots=True)
class _Seen:
    """What one regular member of the tarball held."""

    kind: str  # layer_kind's verdict on its first block
    data: bytes | None = None  # kept when small and not a tar: config, manifest
    members: int = 0
    bytes: int = 0
    diff_id: str = ""  # a gzip layer's: sha256 of what it decompresses to
    error: str | None = None  # why it is not a usable layer


@dataclass(slots=True)
class _Walk:
    caps: InspectCaps
    outer: Budget
    inner: Budget
    members: dict[str, tarfile.TarInfo] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)  # outer symlinks: never a parent folder
    parents: set[str] = field(default_factory=set)  # every folder a member sits in
    seen: dict[str, _Seen] = field(default_factory=dict)
    kept: int = 0

    def look(self, gate: Gate, member: tarfile.TarInfo, name: str) -> _Seen:
        """Read one regular member: keep it if small and not a tar, else walk it as a layer."""
        window = Window(gate, member.offset_data, member.size)
        kind = layer_kind(window.head)
        if member.size <= _MAX_JSON_BYTES:
            data = window.read()
            if kind == "other":
                self.kept += len(data)
                if self.kept > _MAX_KEPT_BYTES:
                    raise ImageRejectedError("the tarball holds too many small files")
                return _Seen(kind, data=data)
            source: IO[bytes] = io.BytesIO(data)
        else:
            source = cast(IO[bytes], window)
        if kind != "gzip":
            # A plain layer reaches the engine as the very bytes walked here, and the engine
            # refuses one that does not hash to its diff_id: no second hash is needed.
            return self._walk(source, kind, name)
        # A gzip layer: the engine unpacks what its decompressor makes of it, so the inspector
        # decompresses it the same way and checks the result against the config's diff_id.
        digest = hashlib.sha256()
        hasher = Worker(digest.update)  # hashing overlaps decompressing
        try:
            seen = self._walk(cast(IO[bytes], Gunzip(source, hasher.put)), kind, name)
        finally:
            hasher.close()
        return replace(seen, diff_id=f"sha256:{digest.hexdigest()}")

    def _walk(self, fileobj: IO[bytes], kind: str, name: str) -> _Seen:
        if kind not in ("tar", "gzip"):
            return _Seen(kind)
        try:
            count, total = walk_layer(fileobj, name, self.inner, stream=kind == "gzip")
            if kind == "gzip":
                while fileobj.read(1024 * 1024):  # to the end: it is all hashed and checked
                    pass
        except OverBudgetError:
            raise
        except ImageRejectedError as exc:
            return _Seen(kind, error=str(exc))
        except (tarfile.TarError, zlib.error) as exc:
            return _Seen(kind, error=f"{name}: not a valid layer archive ({exc})")
        return _Seen(kind, members=count, bytes=total)


def inspect_stream(
    source: Source,
    caps: InspectCaps,
    sink: Sink | None = None,
    *,
    before_verdict: Callable[[], None] | None = None,
) -> ImageReport:
    """Read the plain tar from `source` to its end-of-archive, handing checked members to `sink`.

    Each member that passed goes on as a header the service writes itself plus the member's
    data; manifest.json, repositories and index.json never do. `before_verdict` runs after the
    end-of-archive (to read what follows it). Raises ImageRejectedError if the image cannot run
    safely (the sink is then not aborted: the caller decides). The tag-less manifest is the
    caller's to append (see rewrite.py).
    """
    gate = Gate(source, sink)
    walk = _Walk(
        caps=caps,
        outer=Budget(bytes_left=caps.max_uncompressed_bytes, members_left=4 * caps.max_layers + 16),
        inner=Budget(bytes_left=caps.max_uncompressed_bytes, members_left=caps.max_members),
    )
    try:
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=gate, mode="r:", tarinfo=StrictInfo
        ) as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()  # walk.members keeps what is needed
                _member(tar, member, walk, gate)
    except tarfile.TarError as exc:
        raise ImageRejectedError(f"not a valid tar archive ({exc})") from exc
    if before_verdict is not None:
        before_verdict()
    return _verdict(walk)


def _member(tar: tarfile.TarFile, member: tarfile.TarInfo, walk: _Walk, gate: Gate) -> None:
    name = check_member(member, "tarball", outer=True)
    if name in walk.members and not member.isdir():
        raise ImageRejectedError(f"member {name!r} appears twice")
    _check_folders(walk, name, member)
    walk.outer.spend(member, "tarball")
    member.pax_headers = {}  # read already; a kept member holds only what the checks need
    walk.members[name] = member
    if name not in _WITHHELD:
        gate.emit(_header(name, member))
        gate.forward(member.offset_data, tar.offset)  # tar.offset: the next header's start
    if member.isfile():
        walk.seen[name] = walk.look(gate, member, name)


def _check_folders(walk: _Walk, name: str, member: tarfile.TarInfo) -> None:
    """No member may sit under an outer symlink: the engine would write through the link."""
    parts = name.split("/")
    folders = ["/".join(parts[:i]) for i in range(1, len(parts))]
    if any(folder in walk.links for folder in folders):
        raise ImageRejectedError(f"member {name!r} sits under a symlink in the tarball")
    if member.issym():
        if name in walk.parents:
            raise ImageRejectedError(f"symlink {name!r} replaces a folder of the tarball")
        walk.links.add(name)
    walk.parents.update(folders)


def _header(name: str, member: tarfile.TarInfo) -> bytes:
    """The header the engine reads for a member that passed: written by the service, from the
    checked fields only, so the engine sees the very name, type, link and size inspected."""
    info = tarfile.TarInfo(name)
    if member.isdir():
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif member.issym():
        info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, member.linkname
    elif member.islnk():
        info.type, info.mode = tarfile.LNKTYPE, 0o644
        info.linkname = safe_name(member.linkname, "tarball")
    else:
        info.type, info.mode, info.size = tarfile.REGTYPE, 0o644, member.size
    try:
        return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
    except (UnicodeError, ValueError) as exc:
        raise ImageRejectedError(f"member {name!r} has a name that is not UTF-8") from exc


def _json_member(walk: _Walk, name: str) -> bytes:
    resolved = _resolve(walk.members, name)
    if walk.members[resolved].size > _MAX_JSON_BYTES:
        raise ImageRejectedError(f"{name} is larger than {_MAX_JSON_BYTES} bytes")
    data = walk.seen[resolved].data
    if data is None:
        raise ImageRejectedError(f"{name} is not valid JSON (it is an archive)")
    return data


def _verdict(walk: _Walk) -> ImageReport:
    manifest = walk.members.get("manifest.json")
    if manifest is None:
        raise ImageRejectedError("no manifest.json: not a `docker save` tarball")
    if not manifest.isfile():
        raise ImageRejectedError("manifest.json is not a regular file")
    entry = _manifest_entry(_json_member(walk, "manifest.json"))
    layers: list[str] = entry["Layers"]
    if len(layers) > walk.caps.max_layers:
        raise ImageRejectedError(f"{len(layers)} layers; at most {walk.caps.max_layers}")
    blob = _json_member(walk, entry["Config"])
    digest = _config_digest(entry["Config"], blob)
    config = _strict_json(blob, "the image config")
    fields = _report_fields(config, len(layers))
    diff_ids = config["rootfs"]["diff_ids"]
    used = 0
    for i, layer in enumerate(layers):
        seen = walk.seen[_resolve(walk.members, layer)]
        if seen.kind == "zstd":
            raise ImageRejectedError(
                f"layer {i + 1}: only plain and gzip-compressed layers are supported"
            )
        if seen.error is not None:
            raise ImageRejectedError(f"layer {i + 1}: {seen.error}")
        if seen.kind not in ("tar", "gzip"):
            raise ImageRejectedError(f"layer {i + 1}: not a valid layer archive")
        if seen.kind == "gzip" and seen.diff_id != diff_ids[i]:
            # What was walked is then not what the engine would unpack for this layer.
            raise ImageRejectedError(f"layer {i + 1} does not match the config's diff_id")
        used += seen.bytes
        if used > walk.caps.max_uncompressed_bytes:
            raise ImageRejectedError("the image unpacks to more bytes than this service accepts")
    return ImageReport(
        config_digest=digest,
        layers=len(layers),
        uncompressed_bytes=used,
        manifest_entry=entry,
        **fields,
    )


def inspect_image(path: Path, caps: InspectCaps) -> ImageReport:
    """Check the plain tar at `path` (no engine involved); ImageRejectedError if unsafe."""
    with path.open("rb") as src:
        return inspect_stream(src, caps)
