"""Receipts: DSSE encoding, signing, verification, sealing and key files."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Mapping
from pathlib import Path

import nacl.public
import nacl.signing
import pytest

from scorer.core.receipt import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    ReceiptError,
    SignatureDict,
    build_statement,
    canonical_json,
    commitment,
    pae,
)
from scorer.receipts import (
    Signer,
    generate_organizer_keypair,
    open_sealed,
    open_sealed_metrics,
    parse_organizer_key,
    public_key_from_pem,
    public_key_to_pem,
    read_organizer_private_key,
    read_organizer_public_key,
    seal_private_metrics,
    verify_envelope,
    write_organizer_keypair,
)

DIGEST = "ab" * 32
METRICS = {"private": {"log_loss": 0.25, "roc_auc": None, "n": 12, "log_loss_ci95": [0.1, 0.4]}}


def _statement() -> dict[str, object]:
    return build_statement(
        subject_name="team/model:v1",
        image_digest_hex=DIGEST,
        predicate={"evaluation_id": "ev-1", "outcome": "SUCCEEDED", "public": {"log_loss": 0.69}},
    )


def _payload(envelope: Mapping[str, object]) -> dict[str, object]:
    return json.loads(base64.b64decode(str(envelope["payload"])))  # type: ignore[no-any-return]


def _with_payload(
    envelope: Mapping[str, object], statement: dict[str, object]
) -> dict[str, object]:
    return {**envelope, "payload": base64.b64encode(canonical_json(statement)).decode()}


def test_pae_matches_the_dsse_spec_example() -> None:
    """The DSSE v1 protocol document's test vector."""
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"
    assert pae("", b"") == b"DSSEv1 0  0 "


def test_canonical_json_is_rfc8785() -> None:
    """Keys sorted, no whitespace, ES6 numbers, and Mappings/tuples like dicts/lists."""
    from types import MappingProxyType

    value = MappingProxyType({"b": (1.0, 0.5, None), "a": "é", "c": 1e21})
    assert canonical_json(value) == '{"a":"é","b":[1,0.5,null],"c":1e+21}'.encode()


def test_canonical_json_rejects_nan() -> None:
    with pytest.raises(ValueError, match="nan"):
        canonical_json({"x": float("nan")})


def test_commitment_is_sha256_of_nonce_then_canonical_json() -> None:
    import hashlib

    nonce = bytes(range(32))
    expected = hashlib.sha256(nonce + b'{"a":1,"b":[0.5]}').hexdigest()
    assert commitment({"b": [0.5], "a": 1}, nonce) == expected
    assert commitment({"b": [0.5], "a": 1}, bytes(32)) != expected


def test_build_statement_is_in_toto_v1() -> None:
    statement = _statement()
    assert statement["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"] == [{"name": "team/model:v1", "digest": {"sha256": DIGEST}}]


@pytest.mark.parametrize("digest", ["sha256:" + DIGEST, DIGEST.upper(), DIGEST[:-1], ""])
def test_build_statement_rejects_a_digest_that_is_not_64_lowercase_hex(digest: str) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        build_statement(subject_name="x", image_digest_hex=digest, predicate={})


def test_signed_envelope_verifies_and_returns_the_statement() -> None:
    signer = Signer.generate()
    envelope = signer.sign_envelope(_statement())
    assert envelope["payloadType"] == PAYLOAD_TYPE
    assert envelope["signatures"] == [
        {"keyid": signer.keyid, "sig": envelope["signatures"][0]["sig"]}
    ]
    assert verify_envelope(envelope, signer.public_key_pem()) == _statement()


def test_envelope_survives_a_json_round_trip_and_accepts_pem_bytes() -> None:
    signer = Signer.generate()
    envelope = json.loads(json.dumps(signer.sign_envelope(_statement()), indent=2))
    assert verify_envelope(envelope, signer.public_key_pem().encode()) == _statement()


def test_signing_is_deterministic() -> None:
    """Ed25519 over canonical bytes: one statement, in any key order, gives one envelope."""
    signer = Signer.generate()
    reordered = dict(reversed(list(_statement().items())))
    assert signer.sign_envelope(_statement()) == signer.sign_envelope(reordered)


def test_keyid_is_sha256_of_the_raw_public_key() -> None:
    import hashlib

    signer = Signer.from_seed(bytes(32))
    assert signer.keyid == hashlib.sha256(signer.public_key).hexdigest()
    assert len(signer.public_key) == 32


def test_tampered_payload_is_rejected() -> None:
    signer = Signer.generate()
    envelope = signer.sign_envelope(_statement())
    statement = _payload(envelope)
    statement["predicate"] = {
        "evaluation_id": "ev-1",
        "outcome": "SUCCEEDED",
        "public": {"log_loss": 0.01},
    }
    with pytest.raises(ReceiptError, match="signature does not match"):
        verify_envelope(_with_payload(envelope, statement), signer.public_key_pem())


def test_changed_payload_type_is_rejected() -> None:
    signer = Signer.generate()
    envelope = {**signer.sign_envelope(_statement()), "payloadType": "application/json"}
    with pytest.raises(ReceiptError, match="payloadType"):
        verify_envelope(envelope, signer.public_key_pem())


def test_signature_by_another_key_is_rejected_even_under_the_right_keyid() -> None:
    signer, impostor = Signer.generate(), Signer.generate()
    envelope = impostor.sign_envelope(_statement())
    envelope["signatures"] = [{"keyid": signer.keyid, "sig": envelope["signatures"][0]["sig"]}]
    with pytest.raises(ReceiptError, match="signature does not match"):
        verify_envelope(envelope, signer.public_key_pem())


def test_signature_under_a_wrong_keyid_is_not_tried() -> None:
    signer = Signer.generate()
    envelope = signer.sign_envelope(_statement())
    envelope["signatures"] = [{"keyid": "0" * 64, "sig": envelope["signatures"][0]["sig"]}]
    with pytest.raises(ReceiptError, match="no signature by key"):
        verify_envelope(envelope, signer.public_key_pem())


def test_any_matching_signature_suffices() -> None:
    """A second, bad signature under our keyid does not spoil a good one."""
    signer = Signer.generate()
    envelope = signer.sign_envelope(_statement())
    good = envelope["signatures"][0]
    bad: SignatureDict = {"keyid": signer.keyid, "sig": base64.b64encode(bytes(64)).decode()}
    envelope["signatures"] = [bad, good]
    assert verify_envelope(envelope, signer.public_key_pem()) == _statement()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: {**e, "payload": "not base64!"}, "payload is not valid base64"),
        (lambda e: {**e, "payload": 3}, "payload must be a base64 string"),
        (lambda e: {**e, "signatures": []}, "no signature"),
        (lambda e: {**e, "signatures": "abc"}, "signatures must be a list"),
        (lambda e: {**e, "signatures": [{"keyid": "k", "sig": "%%"}]}, "sig is not valid base64"),
        (lambda e: {k: v for k, v in e.items() if k != "payloadType"}, "payloadType"),
    ],
)
def test_malformed_envelopes_are_rejected(mutate: object, message: str) -> None:
    signer = Signer.generate()
    envelope = mutate(signer.sign_envelope(_statement()))  # type: ignore[operator]
    with pytest.raises(ReceiptError, match=message):
        verify_envelope(envelope, signer.public_key_pem())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"_type": "https://in-toto.io/Statement/v0.1"}, "_type"),
        ({"predicateType": "https://example.com/other"}, "predicateType"),
        ({"predicate": "x"}, "predicate"),
        ({"subject": []}, "subject"),
        ({"subject": [{"digest": {"sha256": DIGEST}}]}, "name"),
        ({"subject": [{"name": "x", "digest": {"sha256": "abc"}}]}, "64 lowercase hex"),
        ({"subject": [{"name": "x", "digest": {"sha512": DIGEST}}]}, "64 lowercase hex"),
    ],
)
def test_signed_but_malformed_statements_are_rejected(
    change: dict[str, object], message: str
) -> None:
    signer = Signer.generate()
    envelope = signer.sign_envelope({**_statement(), **change})
    with pytest.raises(ReceiptError, match=message):
        verify_envelope(envelope, signer.public_key_pem())


def test_signed_payload_with_duplicate_keys_is_rejected() -> None:
    """Two JSON parsers could disagree on which duplicate wins, so neither is trusted."""
    key = nacl.signing.SigningKey.generate()
    signer = Signer(key)
    text = canonical_json(_statement()).decode()
    payload = text.replace('"_type":', '"_type":"x","_type":', 1).encode()
    sig = key.sign(pae(PAYLOAD_TYPE, payload)).signature
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": signer.keyid, "sig": base64.b64encode(sig).decode()}],
    }
    with pytest.raises(ReceiptError, match="duplicate key"):
        verify_envelope(envelope, signer.public_key_pem())


def test_url_safe_unpadded_base64_is_accepted_as_dsse_allows() -> None:
    signer = Signer.generate()
    envelope = signer.sign_envelope(_statement())
    raw = base64.b64decode(str(envelope["payload"]))
    envelope["payload"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert verify_envelope(envelope, signer.public_key_pem()) == _statement()


def test_public_key_pem_round_trips_and_has_the_ed25519_spki_prefix() -> None:
    signer = Signer.generate()
    pem = signer.public_key_pem()
    assert pem.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert pem.endswith("-----END PUBLIC KEY-----\n")
    der = base64.b64decode("".join(pem.splitlines()[1:-1]))
    assert der.hex().startswith("302a300506032b6570032100")
    assert public_key_from_pem(pem) == signer.public_key
    assert public_key_from_pem(pem.replace("\n", "\r\n")) == signer.public_key
    assert public_key_to_pem(signer.public_key) == pem


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        ("", "no '-----BEGIN PUBLIC KEY-----'"),
        ("-----BEGIN PUBLIC KEY-----\n@@@\n-----END PUBLIC KEY-----\n", "not valid base64"),
        (
            public_key_to_pem(bytes(32)).replace("MCowBQYDK2Vw", "MCowBQYDK2Vu"),  # X25519 OID
            "not the expected key type",
        ),
        (
            "-----BEGIN PUBLIC KEY-----\n"
            + base64.b64encode(bytes.fromhex("302a300506032b6570032100") + bytes(31)).decode()
            + "\n-----END PUBLIC KEY-----\n",
            "not the expected key type",
        ),
    ],
)
def test_bad_public_key_pem_is_rejected(pem: str, message: str) -> None:
    with pytest.raises(ReceiptError, match=message):
        public_key_from_pem(pem)


def test_load_or_create_writes_a_0600_pkcs8_key_and_reloads_it(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing.pem"
    first = Signer.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    assert Signer.load_or_create(path).keyid == first.keyid
    assert [p.name for p in path.parent.iterdir()] == ["signing.pem"]  # no temporary left


def test_load_or_create_refuses_a_corrupt_key_instead_of_replacing_it(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    path.write_text("garbage\n")
    with pytest.raises(ReceiptError):
        Signer.load_or_create(path)
    assert path.read_text() == "garbage\n"


def test_signer_repr_does_not_show_the_seed() -> None:
    signer = Signer.from_seed(bytes(range(32)))
    assert bytes(range(32)).hex() not in repr(signer)
    assert signer.keyid in repr(signer)


def test_sealed_metrics_open_with_the_organizer_key() -> None:
    private, public = generate_organizer_keypair()
    sealed = seal_private_metrics(METRICS, public)
    assert sealed is not None
    assert sealed["algorithm"] == "x25519-sealedbox"
    assert open_sealed_metrics(sealed, private) == METRICS


def test_revealed_nonce_proves_the_commitment() -> None:
    private, public = generate_organizer_keypair()
    sealed = seal_private_metrics(METRICS, public)
    assert sealed is not None
    revealed = open_sealed(sealed, private)
    assert (
        commitment(revealed.metrics_by_split, bytes.fromhex(revealed.nonce_hex))
        == sealed["commitment"]
    )


def test_sealing_uses_a_fresh_nonce_each_time() -> None:
    _private, public = generate_organizer_keypair()
    first, second = seal_private_metrics(METRICS, public), seal_private_metrics(METRICS, public)
    assert first is not None and second is not None
    assert first["commitment"] != second["commitment"]
    assert first["ciphertext"] != second["ciphertext"]


def test_without_an_organizer_key_metrics_are_withheld() -> None:
    assert seal_private_metrics(METRICS, None) is None


def test_modified_commitment_is_rejected() -> None:
    private, public = generate_organizer_keypair()
    sealed = seal_private_metrics(METRICS, public)
    assert sealed is not None
    forged = {**sealed, "commitment": commitment({"private": {"log_loss": 0.01}}, bytes(32))}
    with pytest.raises(ReceiptError, match="do not match their commitment"):
        open_sealed_metrics(forged, private)


def test_ciphertext_swapped_for_other_metrics_is_rejected() -> None:
    """Metrics re-sealed to the same organizer key do not match the original commitment."""
    private, public = generate_organizer_keypair()
    sealed = seal_private_metrics(METRICS, public)
    other = seal_private_metrics({"private": {"log_loss": 0.01}}, public)
    assert sealed is not None and other is not None
    with pytest.raises(ReceiptError, match="commitment"):
        open_sealed_metrics({**sealed, "ciphertext": other["ciphertext"]}, private)


def test_wrong_organizer_key_cannot_open() -> None:
    _private, public = generate_organizer_keypair()
    stranger, _ = generate_organizer_keypair()
    sealed = seal_private_metrics(METRICS, public)
    assert sealed is not None
    with pytest.raises(ReceiptError, match="wrong key"):
        open_sealed_metrics(sealed, stranger)


def test_sealing_rejects_a_key_of_the_wrong_length() -> None:
    with pytest.raises(ReceiptError, match="32 bytes, got 31"):
        seal_private_metrics(METRICS, bytes(31))


def test_sealed_box_is_standard_libsodium() -> None:
    """What we seal opens with plain libsodium, so organizers need not run scorer to read it."""
    private, public = generate_organizer_keypair()
    sealed = seal_private_metrics(METRICS, public)
    assert sealed is not None
    plain = nacl.public.SealedBox(nacl.public.PrivateKey(private)).decrypt(
        base64.b64decode(sealed["ciphertext"])
    )
    assert json.loads(plain)["metrics"] == METRICS


def test_organizer_keypair_files_round_trip(tmp_path: Path) -> None:
    private_path, public_path = write_organizer_keypair(tmp_path / "org")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_path.stat().st_mode) == 0o644
    private, public = (
        read_organizer_private_key(private_path),
        read_organizer_public_key(public_path),
    )
    assert bytes(nacl.public.PrivateKey(private).public_key) == public


def test_organizer_keypair_is_never_overwritten(tmp_path: Path) -> None:
    private_path, _ = write_organizer_keypair(tmp_path)
    before = private_path.read_bytes()
    with pytest.raises(FileExistsError):
        write_organizer_keypair(tmp_path)
    assert private_path.read_bytes() == before


def test_organizer_key_as_one_base64_line_is_accepted_with_a_trailing_newline() -> None:
    """The `wg genkey` / `wg pubkey` format."""
    _, public = generate_organizer_keypair()
    line = base64.b64encode(public).decode() + "\n"
    assert parse_organizer_key(line.encode(), private=False) == public
    assert parse_organizer_key(line.encode() + b"\r\n", private=False) == public


@pytest.mark.parametrize(
    ("data", "private", "message"),
    [
        (base64.b64encode(bytes(31)) + b"\n", False, "public key is 32 bytes, this one is 31"),
        (b"definitely not a key", False, "not PEM and not a base64 public key"),
        (b"", True, "private key is 32 bytes, this one is 0"),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            False,
            "holds an organizer private key, expected the public key",
        ),
        (Signer.generate().public_key_pem().encode(), False, "Ed25519 .signing. key"),
        (Signer.generate().private_key_pem().encode(), True, "Ed25519 .signing. key"),
    ],
)
def test_bad_organizer_key_files_get_clear_errors(data: bytes, private: bool, message: str) -> None:
    with pytest.raises(ReceiptError, match=message):
        parse_organizer_key(data, private=private, what="key.pub")


def test_organizer_key_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "organizer.pub"
    path.write_text("AAAA\n")
    with pytest.raises(ReceiptError, match=str(path)):
        read_organizer_public_key(path)
