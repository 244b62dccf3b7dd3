"""Image intake throughput: upload + verify + load through `scorer serve` vs a plain `docker load`.

Crafts a `docker save` tarball around one layer of incompressible random bytes (1 GB; 5 GB with
--big). Each round times `docker load -i` of that file and an upload of the same file over gRPC to
a real `scorer serve` (which hashes, inspects while streaming to the engine, lets the engine
create the image and checks its digest), in alternating order, with `sync` and the image removed
before each; it prints each round's ratio and the median, and the service's peak RSS (VmHWM).
Target: >= 0.8x docker load's speed; peak RSS < 200 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scorer.client import Client, file_sha256
from tests.integration.service_process import ServiceProcess

CHUNK = 4 * 1024 * 1024


class _Random(io.RawIOBase):
    """`size` bytes of randomness, read in chunks (never all in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


def craft(folder: Path, size: int) -> Path:
    layer = folder / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        info = tarfile.TarInfo("blob")
        info.size, info.mode = size, 0o644
        tar.addfile(info, _Random(size))
    diff_id = hashlib.sha256()
    with layer.open("rb") as src:
        while chunk := src.read(CHUNK):
            diff_id.update(chunk)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/blob"], "Env": [f"NONCE={os.urandom(8).hex()}"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id.hexdigest()}"]},
        }
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": None, "Layers": ["l/layer.tar"]}])
    out = folder / "image.tar"
    with tarfile.open(out, "w") as tar:
        for name, data in ((config_name, config), ("manifest.json", manifest.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(layer, "l/layer.tar")
    layer.unlink()
    return out


def vm_hwm_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def _docker_load(tarball: Path, image_id: str) -> float:
    t0 = time.monotonic()
    subprocess.run(["docker", "load", "-q", "-i", str(tarball)], check=True, capture_output=True)
    seconds = time.monotonic() - t0
    subprocess.run(["docker", "rmi", image_id], check=True, capture_output=True)
    return seconds


def _upload(client: Client, tarball: Path, image_id: str, digest: tuple[int, str]) -> float:
    t0 = time.monotonic()
    reply = client.upload_image(tarball, name="bench", digest=digest)
    seconds = time.monotonic() - t0
    assert reply.image_digest == image_id and not reply.already_present
    # The service's record of it goes with the image, or the next round would be a re-upload.
    subprocess.run(["docker", "rmi", image_id], check=True, capture_output=True)
    return seconds


def run(size: int, folder: Path, rounds: int) -> None:
    t0 = time.monotonic()
    tarball = craft(folder, size)
    image_id = f"sha256:{hashlib.sha256(_config_bytes(tarball)).hexdigest()}"
    gb = tarball.stat().st_size / 1e9
    print(f"crafted {gb:.2f} GB in {time.monotonic() - t0:.1f} s")
    svc = ServiceProcess(folder / "state", folder / "serve.log")
    svc.start()
    ratios: list[float] = []
    try:
        assert svc.proc is not None
        hwm_before = vm_hwm_bytes(svc.proc.pid)
        with Client(svc.address) as client:
            t0 = time.monotonic()
            digest = file_sha256(tarball)  # the client's pass (a client can hash while saving)
            hash_s = time.monotonic() - t0
            for i in range(rounds):
                times: dict[str, float] = {}
                for what in ("docker", "upload") if i % 2 == 0 else ("upload", "docker"):
                    subprocess.run(["sync"], check=True)
                    if what == "docker":
                        times[what] = _docker_load(tarball, image_id)
                    else:
                        times[what] = _upload(client, tarball, image_id, digest)
                ratios.append(times["docker"] / times["upload"])
                print(
                    f"round {i + 1}: docker load {times['docker']:.2f} s "
                    f"({gb / times['docker']:.3f} GB/s); UploadImage {times['upload']:.2f} s "
                    f"({gb / times['upload']:.3f} GB/s) = {ratios[-1]:.2f}x"
                )
        hwm = vm_hwm_bytes(svc.proc.pid)
        phases = [
            line for line in svc.log_path.read_text().splitlines() if '"image_uploaded"' in line
        ]
        print("service phases (last round):", phases[-1] if phases else "(none)")
    finally:
        svc.stop()
        subprocess.run(["docker", "rmi", image_id], check=False, capture_output=True)
    print(
        f"{gb:.2f} GB: UploadImage (receive+hash+inspect+load+verify) at "
        f"{statistics.median(ratios):.2f}x docker load's speed, median of {rounds} "
        f"[target >= 0.80]; the client's own hash pass took {hash_s:.2f} s more"
    )
    print(
        f"service peak RSS (VmHWM): {hwm / 2**20:.0f} MiB (at start {hwm_before / 2**20:.0f} MiB)"
        " [target < 200 MiB]"
    )


def _config_bytes(tarball: Path) -> bytes:
    with tarfile.open(tarball) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        return tar.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big", action="store_true", help="also run 5 GB")
    parser.add_argument("--dir", default=None, help="scratch folder (needs ~2x the image size)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per size (default 5)")
    args = parser.parse_args()
    sizes = [10**9] + ([5 * 10**9] if args.big else [])
    for size in sizes:
        with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
            folder = Path(scratch)
            folder.chmod(0o755)
            run(size, folder, args.rounds)


if __name__ == "__main__":
    main()
