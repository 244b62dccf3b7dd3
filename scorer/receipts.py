"""Signing, sealing and verifying receipts (CONTRACT.md §4), and the key files behind them.

The receipt-signing key is Ed25519, stored as an unencrypted PKCS#8 PEM ("PRIVATE KEY", the
format of `openssl genpkey -algorithm ed25519`); organizer keys are X25519 (see below).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nacl.exceptions
import nacl.public
import nacl.signing

from scorer.core.receipt import (
    ED25519_PKCS8_PREFIX,
    ED25519_SPKI_PREFIX,
    PAYLOAD_TYPE,
    SEALED_ALGORITHM,
    X25519_PKCS8_PREFIX,
    X25519_SPKI_PREFIX,
    EnvelopeDict,
    ReceiptError,
    b64decode,
    b64encode,
    canonical_json,
    commitment,
    decode_pem,
    encode_pem,
    pae,
    parse_envelope,
    parse_statement,
    pem_block,
    sha256_hex,
)

__all__ = [
    "ReceiptError",
    "RevealedMetrics",
    "Signer",
    "generate_organizer_keypair",
    "open_sealed",
    "open_sealed_metrics",
    "public_key_from_pem",
    "public_key_to_pem",
    "read_organizer_private_key",
    "read_organizer_public_key",
    "seal_private_metrics",
    "verify_envelope",
    "write_organizer_keypair",
]

SIGNING_ALGORITHM: Final = "ed25519"
NONCE_BYTES: Final = 32
ORGANIZER_PRIVATE_FILE: Final = "organizer.key"
ORGANIZER_PUBLIC_FILE: Final = "organizer.pub"


def public_key_to_pem(raw_public_key: bytes) -> str:
    """PEM SubjectPublicKeyInfo of a raw Ed25519 public key (what `openssl pkey -pubout` prints)."""
    return encode_pem(ED25519_SPKI_PREFIX, raw_public_key, label="PUBLIC KEY")


def public_key_from_pem(pem: str | bytes) -> bytes:
    """The raw 32-byte Ed25519 key in a PEM SubjectPublicKeyInfo; ReceiptError otherwise."""
    return decode_pem(pem, ED25519_SPKI_PREFIX, label="PUBLIC KEY", what="receipt public key")


def keyid_of(raw_public_key: bytes) -> str:
    return sha256_hex(raw_public_key)


class Signer:
    """The service's Ed25519 receipt-signing key."""

    __slots__ = ("_key",)

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._key = signing_key

    @classmethod
    def generate(cls) -> Signer:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Signer:
        if len(seed) != 32:
            raise ReceiptError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(nacl.signing.SigningKey(seed))

    @classmethod
    def from_pem(cls, pem: str | bytes) -> Signer:
        seed = decode_pem(pem, ED25519_PKCS8_PREFIX, label="PRIVATE KEY", what="signing key")
        return cls.from_seed(seed)

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        """Load the PKCS#8 PEM at `path`, or create it (mode 0600, atomically) if absent."""
        try:
            return cls.from_pem(path.read_bytes())
        except FileNotFoundError:
            pass
        signer = cls.generate()
        if _write_new_file(path, signer.private_key_pem().encode("ascii"), mode=0o600):
            return signer
        # Another process created it between our read and our write: use theirs.
        return cls.from_pem(path.read_bytes())

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    @property
    def keyid(self) -> str:
        return keyid_of(self.public_key)

    def public_key_pem(self) -> str:
        return public_key_to_pem(self.public_key)

    def private_key_pem(self) -> str:
        return encode_pem(ED25519_PKCS8_PREFIX, bytes(self._key), label="PRIVATE KEY")

    def sign_envelope(self, statement: Mapping[str, object]) -> EnvelopeDict:
        """A DSSE envelope over the statement's canonical JSON, signed with this key."""
        payload = canonical_json(statement)
        signature = self._key.sign(pae(PAYLOAD_TYPE, payload)).signature
        return {
            "payloadType": PAYLOAD_TYPE,
            "payload": b64encode(payload),
            "signatures": [{"keyid": self.keyid, "sig": b64encode(signature)}],
        }

    def __repr__(self) -> str:
        return f"Signer(keyid={self.keyid!r})"  # never the seed


def verify_envelope(
    envelope: Mapping[str, object], public_key_pem: str | bytes
) -> dict[str, object]:
    """The in-toto statement inside `envelope` once a signature by this key checks out.

    Only signatures whose keyid is this key's are tried. Raises ReceiptError on any fault.
    """
    public_key = public_key_from_pem(public_key_pem)
    parsed = parse_envelope(envelope)
    keyid = keyid_of(public_key)
    candidates = [sig for sig in parsed.signatures if sig.keyid == keyid]
    if not candidates:
        raise ReceiptError(f"no signature by key {keyid}")
    verify_key = nacl.signing.VerifyKey(public_key)
    message = pae(parsed.payload_type, parsed.payload)
    if not any(_signature_ok(verify_key, message, sig.sig) for sig in candidates):
        raise ReceiptError("the signature does not match the payload")
    return parse_statement(parsed.payload)


def _signature_ok(key: nacl.signing.VerifyKey, message: bytes, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    try:
        key.verify(message, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class RevealedMetrics:
    """Opened private metrics and the nonce that, published together, prove the commitment."""

    metrics_by_split: dict[str, object]
    nonce_hex: str


def seal_private_metrics(
    metrics_by_split: Mapping[str, Mapping[str, object]], organizer_public_key: bytes | None
) -> dict[str, str] | None:
    """Encrypt the non-public splits' metrics to the organizer; None (withheld) without a key.

    The ciphertext holds `canonical_json({"metrics": ..., "nonce": hex})`; the commitment is
    `commitment(metrics, nonce)` so an opened (or revealed) value can be checked against it.
    """
    if organizer_public_key is None:
        return None
    box = nacl.public.SealedBox(_x25519_public(organizer_public_key))
    nonce = secrets.token_bytes(NONCE_BYTES)
    plaintext = canonical_json({"metrics": metrics_by_split, "nonce": nonce.hex()})
    return {
        "algorithm": SEALED_ALGORITHM,
        "ciphertext": b64encode(box.encrypt(plaintext)),
        "commitment": commitment(metrics_by_split, nonce),
    }


def open_sealed(sealed: Mapping[str, object], organizer_private_key: bytes) -> RevealedMetrics:
    """Decrypt a sealed block and check its commitment; ReceiptError on any mismatch."""
    if sealed.get("algorithm") != SEALED_ALGORITHM:
        raise ReceiptError(f"unsupported sealing algorithm {sealed.get('algorithm')!r}")
    expected = sealed.get("commitment")
    if not isinstance(expected, str):
        raise ReceiptError("the sealed block has no commitment")
    ciphertext = b64decode(sealed.get("ciphertext"), what="ciphertext")
    box = nacl.public.SealedBox(_x25519_private(organizer_private_key))
    try:
        plaintext = box.decrypt(ciphertext)
        inner = json.loads(plaintext)
    except nacl.exceptions.CryptoError as exc:
        raise ReceiptError("cannot open the sealed metrics: wrong key or corrupted") from exc
    except ValueError as exc:
        raise ReceiptError("the sealed plaintext is not JSON") from exc
    metrics, nonce = _unpack_inner(inner)
    if not hmac.compare_digest(commitment(metrics, nonce), expected):
        raise ReceiptError("the sealed metrics do not match their commitment")
    return RevealedMetrics(metrics_by_split=metrics, nonce_hex=nonce.hex())


def open_sealed_metrics(
    sealed: Mapping[str, object], organizer_private_key: bytes
) -> dict[str, object]:
    """The metrics by split inside a sealed block, after checking the commitment."""
    return open_sealed(sealed, organizer_private_key).metrics_by_split


def _unpack_inner(inner: object) -> tuple[dict[str, object], bytes]:
    if not isinstance(inner, dict) or not isinstance(inner.get("metrics"), dict):
        raise ReceiptError("the sealed plaintext has no metrics object")
    nonce_hex = inner.get("nonce")
    if not isinstance(nonce_hex, str) or len(nonce_hex) != 2 * NONCE_BYTES:
        raise ReceiptError("the sealed plaintext has no valid nonce")
    try:
        nonce = bytes.fromhex(nonce_hex)
    except ValueError as exc:
        raise ReceiptError("the sealed plaintext has no valid nonce") from exc
    return inner["metrics"], nonce


def _x25519_public(raw: bytes) -> nacl.public.PublicKey:
    if len(raw) != 32:
        raise ReceiptError(f"an organizer public key is 32 bytes, got {len(raw)}")
    return nacl.public.PublicKey(raw)


def _x25519_private(raw: bytes) -> nacl.public.PrivateKey:
    if len(raw) != 32:
        raise ReceiptError(f"an organizer private key is 32 bytes, got {len(raw)}")
    return nacl.public.PrivateKey(raw)


# Organizer keys (X25519). Written as PEM: PKCS#8 "PRIVATE KEY" and SPKI "PUBLIC KEY", as
# `openssl genpkey -algorithm x25519` / `openssl pkey -pubout` write them. Read from PEM or from
# a single base64 line of the raw 32 bytes (the format of `wg genkey` / `wg pubkey`).


def generate_organizer_keypair() -> tuple[bytes, bytes]:
    """(private, public), each the raw 32 bytes of an X25519 key."""
    private = nacl.public.PrivateKey.generate()
    return bytes(private), bytes(private.public_key)


def write_organizer_keypair(out_dir: Path) -> tuple[Path, Path]:
    """Create `organizer.key` (0600) and `organizer.pub` (0644) in `out_dir`; never overwrites."""
    private, public = generate_organizer_keypair()
    private_path, public_path = out_dir / ORGANIZER_PRIVATE_FILE, out_dir / ORGANIZER_PUBLIC_FILE
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} already exists; refusing to overwrite a key")
    out_dir.mkdir(parents=True, exist_ok=True)
    private_pem = encode_pem(X25519_PKCS8_PREFIX, private, label="PRIVATE KEY")
    if not _write_new_file(private_path, private_pem.encode("ascii"), mode=0o600):
        raise FileExistsError(f"{private_path} already exists; refusing to overwrite a key")
    public_pem = encode_pem(X25519_SPKI_PREFIX, public, label="PUBLIC KEY")
    if not _write_new_file(public_path, public_pem.encode("ascii"), mode=0o644):
        raise FileExistsError(f"{public_path} already exists; refusing to overwrite a key")
    return private_path, public_path


def read_organizer_public_key(path: Path) -> bytes:
    return parse_organizer_key(path.read_bytes(), private=False, what=str(path))


def read_organizer_private_key(path: Path) -> bytes:
    return parse_organizer_key(path.read_bytes(), private=True, what=str(path))


def parse_organizer_key(data: bytes, *, private: bool, what: str = "organizer key") -> bytes:
    """The raw 32 bytes of an X25519 key given as PEM or as one base64 line."""
    kind = "private" if private else "public"
    text = data.decode("ascii", errors="replace").strip()
    if "-----BEGIN" not in text:
        return _decode_raw_base64(text, kind=kind, what=what)
    other = "PUBLIC KEY" if private else "PRIVATE KEY"
    if f"-----BEGIN {other}-----" in text:
        raise ReceiptError(f"{what}: holds an organizer {other.lower()}, expected the {kind} key")
    label = "PRIVATE KEY" if private else "PUBLIC KEY"
    prefix = X25519_PKCS8_PREFIX if private else X25519_SPKI_PREFIX
    signing_prefix = ED25519_PKCS8_PREFIX if private else ED25519_SPKI_PREFIX
    if pem_block(text, label=label, what=what).startswith(signing_prefix):
        raise ReceiptError(f"{what}: an Ed25519 (signing) key, not an X25519 organizer key")
    return decode_pem(text, prefix, label=label, what=what)


def _decode_raw_base64(text: str, *, kind: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReceiptError(f"{what}: not PEM and not a base64 {kind} key") from exc
    if len(raw) != 32:
        raise ReceiptError(f"{what}: an organizer {kind} key is 32 bytes, this one is {len(raw)}")
    return raw


def _write_new_file(path: Path, data: bytes, *, mode: int) -> bool:
    """Atomically create `path` with `data` and `mode`; False if it already exists.

    Written to a temporary name, fsynced, then hard-linked into place: readers never see a
    partial key, and a racing creator is never clobbered.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)  # the umask must not widen or narrow the mode
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
