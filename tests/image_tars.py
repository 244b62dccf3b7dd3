"""Crafted `docker save` tarballs for the intake tests: a good one, and every way to be bad."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Member = tuple[tarfile.TarInfo, bytes]


def file_member(name: str, data: bytes, mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def special_member(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def tar_bytes(members: Sequence[Member], gz: bool = False) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gz else "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out.getvalue()


@dataclass
class Image:
    """One image's parts; `tarball()` assembles them the way `docker save` does."""

    layers: list[bytes] = field(default_factory=lambda: [tar_bytes([file_member("hello", b"hi")])])
    architecture: str = "amd64"
    entrypoint: list[str] | None = field(default_factory=lambda: ["/hello"])
    extra_config: dict[str, Any] = field(default_factory=dict)
    repo_tags: list[str] | None = field(default_factory=lambda: ["team/app:1"])
    raw_config: bytes | None = None  # used as is, instead of the generated config
    config_name: str | None = None  # instead of "<sha256 of the config>.json"

    def config(self) -> bytes:
        if self.raw_config is not None:
            return self.raw_config
        diff_ids = [f"sha256:{hashlib.sha256(_plain(layer)).hexdigest()}" for layer in self.layers]
        body = {
            "architecture": self.architecture,
            "os": "linux",
            "config": {"User": "1000", "Entrypoint": self.entrypoint, "Env": ["A=1"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            **self.extra_config,
        }
        return json.dumps(body).encode()

    def digest(self) -> str:
        return f"sha256:{hashlib.sha256(self.config()).hexdigest()}"

    def entry_and_members(self, prefix: str = "") -> tuple[dict[str, Any], list[Member]]:
        config = self.config()
        config_name = self.config_name or f"{hashlib.sha256(config).hexdigest()}.json"
        members = [file_member(config_name, config)]
        layer_paths = []
        for i, layer in enumerate(self.layers):
            path = f"{prefix}{i:064x}/layer.tar"
            members.append(file_member(path, layer))
            layer_paths.append(path)
        entry = {"Config": config_name, "RepoTags": self.repo_tags, "Layers": layer_paths}
        return entry, members

    def tarball(self, *, extra: Sequence[Member] = (), also: Image | None = None) -> bytes:
        entry, members = self.entry_and_members()
        entries = [entry]
        if also is not None:
            other_entry, other_members = also.entry_and_members(prefix="b")
            entries.append(other_entry)
            members += other_members
        manifest = file_member("manifest.json", json.dumps(entries).encode())
        return tar_bytes([*members, *extra, manifest])


def _plain(layer: bytes) -> bytes:
    """A layer as the engine unpacks it: gzip members decompressed (the diff_id is of this)."""
    if not layer.startswith(b"\x1f\x8b"):
        return layer
    try:
        return gzip.decompress(layer)
    except (OSError, EOFError):
        return layer  # a broken layer, for a test that expects it refused
