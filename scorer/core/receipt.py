"""The receipt's exact bytes: canonical JSON, in-toto statements, DSSE envelopes and key encodings.

Pure: no I/O and no secrets; signing and sealing live in `scorer.receipts`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypedDict

import rfc8785

PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://scorer.dev/evaluation-receipt/v1"
SEALED_ALGORITHM: Final = "x25519-sealedbox"

_HEX64 = re.compile(r"[0-9a-f]{64}")

# Fixed DER prefixes (RFC 8410): SubjectPublicKeyInfo and PKCS#8 v1 for a 32-byte key.
# Each is the whole structure up to the raw key, so encoding is concatenation, not cryptography.
ED25519_SPKI_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")
ED25519_PKCS8_PREFIX: Final = bytes.fromhex("302e020100300506032b657004220420")
X25519_SPKI_PREFIX: Final = bytes.fromhex("302a300506032b656e032100")
X25519_PKCS8_PREFIX: Final = bytes.fromhex("302e020100300506032b656e04220420")


class SignatureDict(TypedDict):
    keyid: str
    sig: str  # base64


class EnvelopeDict(TypedDict):
    """A DSSE envelope as JSON."""

    payloadType: str
    payload: str  # base64 of the canonical JSON statement
    signatures: list[SignatureDict]


class ReceiptError(Exception):
    """A receipt, envelope, sealed block or key that is malformed or does not verify."""


def canonical_json(obj: object) -> bytes:
    """RFC 8785 (JCS) bytes of `obj`; any Mapping or tuple is accepted like a dict or list.

    Raises ValueError (rfc8785.CanonicalizationError) for NaN, infinities, integers beyond
    ±(2**53 - 1) and non-JSON types.
    """
    return rfc8785.dumps(_plain(obj))  # type: ignore[arg-type]


def _plain(obj: object) -> object:
    # rfc8785 only recognises dict and list/tuple; frozen mappings (MappingProxyType) are common.
    if isinstance(obj, Mapping):
        return {key: _plain(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(item) for item in obj]
    return obj


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def commitment(metrics: Mapping[str, object], nonce: bytes) -> str:
    """Hex SHA-256 of `nonce || canonical_json(metrics)`: the nonce's raw bytes, then the JCS bytes.

    The 32-byte random nonce travels only inside the sealed ciphertext, so the public commitment
    cannot be brute-forced from a guess of the (low-entropy) metrics.
    """
    return sha256_hex(nonce + canonical_json(metrics))


def is_sha256_hex(value: object) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: `DSSEv1 SP LEN(type) SP type SP LEN(body) SP body`.

    LEN is the ASCII decimal byte length, with no leading zeros.
    """
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def build_statement(
    *, subject_name: str, image_digest_hex: str, predicate: Mapping[str, object]
) -> dict[str, object]:
    """An in-toto Statement v1 about one image: the submitted reference and its image id."""
    if not subject_name:
        raise ValueError("the subject name (the submitted reference) must not be empty")
    if not is_sha256_hex(image_digest_hex):
        raise ValueError("the image digest must be 64 lowercase hex characters (no 'sha256:')")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": image_digest_hex}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": dict(predicate),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeSignature:
    keyid: str
    sig: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedEnvelope:
    """A DSSE envelope's fields, decoded but not yet verified."""

    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: object, *, what: str) -> bytes:
    """Strict base64; DSSE allows the standard or URL-safe alphabet, padded or not."""
    if not isinstance(text, str):
        raise ReceiptError(f"{what} must be a base64 string")
    normalised = text.replace("-", "+").replace("_", "/")
    normalised += "=" * (-len(normalised) % 4)
    try:
        return base64.b64decode(normalised.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ReceiptError(f"{what} is not valid base64") from exc


def parse_envelope(envelope: object) -> ParsedEnvelope:
    """Check an envelope's shape and decode it; signatures are checked by the caller."""
    if not isinstance(envelope, Mapping):
        raise ReceiptError("the envelope must be a JSON object")
    payload_type = envelope.get("payloadType")
    if payload_type != PAYLOAD_TYPE:
        raise ReceiptError(f"payloadType must be {PAYLOAD_TYPE!r}, got {payload_type!r}")
    payload = b64decode(envelope.get("payload"), what="payload")
    raw_signatures = envelope.get("signatures")
    if not isinstance(raw_signatures, Sequence) or isinstance(raw_signatures, str | bytes):
        raise ReceiptError("signatures must be a list")
    if not raw_signatures:
        raise ReceiptError("the envelope carries no signature")
    return ParsedEnvelope(
        payload_type=payload_type,
        payload=payload,
        signatures=tuple(_parse_signature(item) for item in raw_signatures),
    )


def _parse_signature(item: object) -> EnvelopeSignature:
    if not isinstance(item, Mapping):
        raise ReceiptError("each signature must be a JSON object")
    keyid = item.get("keyid", "")
    if not isinstance(keyid, str):
        raise ReceiptError("a signature's keyid must be a string")
    return EnvelopeSignature(keyid=keyid, sig=b64decode(item.get("sig"), what="sig"))


def parse_statement(payload: bytes) -> dict[str, object]:
    """Decode a verified payload and check it is an in-toto Statement v1 with our predicate."""
    try:
        statement = json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReceiptError(f"the payload is not valid JSON: {exc}") from exc
    if not isinstance(statement, dict):
        raise ReceiptError("the payload must be a JSON object")
    if statement.get("_type") != STATEMENT_TYPE:
        raise ReceiptError(f"_type must be {STATEMENT_TYPE!r}")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise ReceiptError(f"predicateType must be {PREDICATE_TYPE!r}")
    if not isinstance(statement.get("predicate"), dict):
        raise ReceiptError("the statement has no predicate object")
    _check_subject(statement.get("subject"))
    return statement


def _check_subject(subject: object) -> None:
    if not isinstance(subject, list) or not subject:
        raise ReceiptError("the statement's subject must be a non-empty list")
    for item in subject:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ReceiptError("each subject needs a name")
        digest = item.get("digest")
        if not isinstance(digest, dict) or not is_sha256_hex(digest.get("sha256")):
            raise ReceiptError("each subject needs a sha256 digest of 64 lowercase hex characters")


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Two parsers could pick different duplicates; refuse rather than guess.
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def encode_pem(der_prefix: bytes, raw: bytes, *, label: str) -> str:
    """PEM text of a fixed-prefix DER structure around a 32-byte raw key."""
    if len(raw) != 32:
        raise ValueError(f"a raw key is 32 bytes, got {len(raw)}")
    body = base64.b64encode(der_prefix + raw).decode("ascii")
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


def decode_pem(text: str | bytes, der_prefix: bytes, *, label: str, what: str) -> bytes:
    """The raw 32-byte key inside a PEM block whose DER must be exactly `der_prefix` + key."""
    der = pem_block(text, label=label, what=what)
    if len(der) != len(der_prefix) + 32 or not der.startswith(der_prefix):
        raise ReceiptError(f"{what}: not the expected key type (wrong algorithm or structure)")
    return der[len(der_prefix) :]


def pem_block(text: str | bytes, *, label: str, what: str) -> bytes:
    """The DER bytes of the first `-----BEGIN label-----` block."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ReceiptError(f"{what}: not PEM text") from exc
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    start = text.find(begin)
    stop = text.find(end, start + len(begin))
    if start < 0 or stop < 0:
        raise ReceiptError(f"{what}: no '{begin}' ... '{end}' block")
    body = "".join(text[start + len(begin) : stop].split())
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise ReceiptError(f"{what}: the PEM body is not valid base64") from exc
