"""Inspect a spooled `docker save` tarball before the engine sees it.

Exactly one image; manifest.json and the config parsed strictly; linux/amd64; the config's
sha256 is the image id the engine must report after loading; sizes and layer count within caps;
no member escaping its folder, no device file. What the image declares is reported.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scorer.images.layers import Budget, ImageRejectedError, check_layer, check_member

__all__ = ["ImageRejectedError", "ImageReport", "InspectCaps", "ManifestSpan", "inspect_image"]

_MAX_JSON_BYTES = 8 * 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MANIFEST_KEYS = {"Config", "RepoTags", "Layers", "Parent", "LayerSources"}


@dataclass(frozen=True, slots=True, kw_only=True)
class InspectCaps:
    max_uncompressed_bytes: int
    max_layers: int
    max_members: int = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestSpan:
    """Where manifest.json sits in the tarball (header start, end of padded data)."""

    start: int
    end: int
    entry: dict[str, Any]


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
    manifest: ManifestSpan


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


def _read(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> bytes:
    member = _resolve(members, name)
    if member.size > _MAX_JSON_BYTES:
        raise ImageRejectedError(f"{name} is larger than {_MAX_JSON_BYTES} bytes")
    handle = tar.extractfile(member)
    if handle is None:
        raise ImageRejectedError(f"{name} is not a regular file")
    return handle.read()


def _resolve(members: dict[str, tarfile.TarInfo], name: str) -> tarfile.TarInfo:
    """Follow in-archive symlinks (docker save links repeated layers) to a regular file."""
    for _ in range(8):
        member = members.get(name)
        if member is None:
            raise ImageRejectedError(f"the tarball has no member {name!r}")
        if not member.issym():
            if not member.isfile():
                raise ImageRejectedError(f"member {name!r} is not a regular file")
            return member
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


def inspect_image(path: Path, caps: InspectCaps) -> ImageReport:
    """Check the plain tar at `path` and report what it declares; ImageRejectedError if unsafe."""
    budget = Budget(bytes_left=caps.max_uncompressed_bytes, members_left=caps.max_members)
    try:
        with tarfile.open(path, mode="r:") as tar:
            members: dict[str, tarfile.TarInfo] = {}
            for member in tar:
                name = check_member(member, "tarball", outer=True)
                if name in members and not member.isdir():
                    raise ImageRejectedError(f"member {name!r} appears twice")
                budget.spend(member, "tarball")
                members[name] = member
            if "manifest.json" not in members:
                raise ImageRejectedError("no manifest.json: not a `docker save` tarball")
            entry = _manifest_entry(_read(tar, members, "manifest.json"))
            layers: list[str] = entry["Layers"]
            if len(layers) > caps.max_layers:
                raise ImageRejectedError(f"{len(layers)} layers; at most {caps.max_layers}")
            blob = _read(tar, members, entry["Config"])
            digest = _config_digest(entry["Config"], blob)
            fields = _report_fields(_strict_json(blob, "the image config"), len(layers))
            layer_budget = Budget(
                bytes_left=caps.max_uncompressed_bytes, members_left=budget.members_left
            )
            for i, layer in enumerate(layers):
                handle = tar.extractfile(_resolve(members, layer))
                if handle is None:
                    raise ImageRejectedError(f"layer {i + 1} is not a regular file")
                check_layer(handle, f"layer {i + 1}", layer_budget)
            manifest = members["manifest.json"]
            span = ManifestSpan(
                start=manifest.offset,
                end=manifest.offset_data + -(-manifest.size // 512) * 512,
                entry=entry,
            )
    except tarfile.TarError as exc:
        raise ImageRejectedError(f"not a valid tar archive ({exc})") from exc
    used = caps.max_uncompressed_bytes - layer_budget.bytes_left
    return ImageReport(
        config_digest=digest, layers=len(layers), uncompressed_bytes=used, manifest=span, **fields
    )
