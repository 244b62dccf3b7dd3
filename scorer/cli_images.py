"""CLI: `scorer image upload|list|pin|unpin` — image intake over gRPC."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from scorer import convert
from scorer.cli_common import call, client_of, emit, fail
from scorer.client import Client, ClientError
from scorer.v1 import scorer_pb2 as pb


@contextmanager
def _progress(path: Path, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(
        length=path.stat().st_size, label=f"uploading {path.name}", file=sys.stderr
    ) as bar:
        yield bar.update


def upload_file(client: Client, path: Path, name: str, *, quiet: bool) -> pb.UploadImageResponse:
    """Upload PATH; ClientError (with the server's reason) if the service refuses it."""
    with _progress(path, quiet) as on_bytes:
        return client.upload_image(path, name=name, on_bytes=on_bytes)


def describe(reply: pb.UploadImageResponse) -> str:
    r = reply.report
    seen = "already present, not loaded again" if reply.already_present else "loaded"
    command = " ".join([*r.entrypoint, *r.cmd])
    return (
        f"{reply.image_digest}  {reply.name} ({seen})\n"
        f"  {r.os}/{r.architecture}, {r.layers} layers, {r.uncompressed_bytes} bytes unpacked\n"
        f"  user={r.user or '(none: runs as 65534:65534)'} command={command!r}\n"
        f"  env={list(r.env)} exposed_ports={list(r.exposed_ports)} volumes={list(r.volumes)}"
    )


@click.group()
def image() -> None:
    """Upload `docker save` tarballs to the service; list and pin uploaded images."""


@image.command("upload")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--name", default="", help="Your name for the image (default: the file name).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def image_upload(ctx: click.Context, file: Path, name: str, as_json: bool) -> None:
    """Upload FILE (`docker save` output: .tar, .tar.gz or .tar.zst); prints its digest."""
    with client_of(ctx) as client:
        try:
            reply = upload_file(client, file, name, quiet=as_json)
        except ClientError as exc:
            fail(str(exc), 1 if exc.code is not None and exc.code.name != "UNAVAILABLE" else 2)
    if as_json:
        emit(convert.message_json(reply))
    else:
        click.echo(describe(reply))


@image.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def image_list(ctx: click.Context, as_json: bool) -> None:
    """Uploaded images, least recently used first (admin: loopback only)."""
    with client_of(ctx) as client:
        reply = call(client, client.admin.ListImages, pb.ListImagesRequest())
    if as_json:
        emit(convert.message_json(reply))
        return
    for img in reply.images:
        flags = ("pinned " if img.pinned else "") + ("" if img.managed else "external ")
        click.echo(f"{img.digest}  {img.size_bytes:>12}  {flags}{img.name}")


def _pin(ctx: click.Context, digest: str, pinned: bool) -> None:
    with client_of(ctx) as client:
        img = call(client, client.admin.PinImage, pb.PinImageRequest(digest=digest, pinned=pinned))
    click.echo(f"{img.digest} {'pinned: never evicted' if img.pinned else 'unpinned'}")


@image.command("pin")
@click.argument("digest")
@click.pass_context
def image_pin(ctx: click.Context, digest: str) -> None:
    """Keep DIGEST forever (e.g. a team's final selection, for audit re-runs)."""
    _pin(ctx, digest, True)


@image.command("unpin")
@click.argument("digest")
@click.pass_context
def image_unpin(ctx: click.Context, digest: str) -> None:
    """Let DIGEST be evicted again when the image store is over its budget."""
    _pin(ctx, digest, False)


def register(main: click.Group) -> None:
    main.add_command(image)
