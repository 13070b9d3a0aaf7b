"""Signed notes and checkpoints against the C2SP / golang.org/x/mod / transparency-dev vectors,
plus the malformed and hostile inputs a verifier of exported checkpoints must refuse."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from kubepci.auditlog.checkpoint import (
    Checkpoint,
    CheckpointError,
    InvalidSignatureError,
    KeyFormatError,
    MalformedNoteError,
    NoteSigner,
    NoteVerifier,
    UnverifiedNoteError,
    generate_keypair,
    open_checkpoint,
    open_note,
    parse_skey,
    parse_vkey,
    sign_checkpoint,
    sign_note,
    split_note,
)
from kubepci.auditlog.merkle import HASH_SIZE, MemoryTree, leaf_hash

VECTORS: dict[str, Any] = json.loads(Path("../shared/testdata/signed-note/vectors.json").read_text())
KEYPAIRS: list[dict[str, str]] = VECTORS["test_keypairs_ed25519"]
LOG_SIGNER = parse_skey(KEYPAIRS[0]["skey"])  # "Log"
KNOWN_SIGNER = parse_skey(KEYPAIRS[1]["skey"])  # "Known"
UNKNOWN_SIGNER = parse_skey(KEYPAIRS[3]["skey"])  # "Unknown"
EM = "\u2014"


# --- published vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["verify"], ids=lambda c: c["id"])
def test_verify_vector(case: dict[str, Any]) -> None:
    verifier = parse_vkey(case["vkey"])
    text, verified, unverified = open_note(case["note"], [verifier])
    assert text == case["want_text"]
    assert len(verified) == case["want_verified_sigs"]
    assert {(sig.name, sig.key_id) for sig in verified} == {(verifier.name, verifier.key_id)}
    assert len(unverified) == case.get("want_unverified_sigs", 0)


def test_unknown_cosigner_is_reported_not_trusted() -> None:
    case = next(c for c in VECTORS["verify"] if c["id"] == "go-sumdb-note-two-sigs-peter-known")
    opened = open_note(case["note"], [parse_vkey(case["vkey"])])
    assert [sig.name for sig in opened.unverified_sigs] == ["EnochRoot"]
    assert opened.unverified_sigs[0].key_id == 0xAF0CFE78


@pytest.mark.parametrize("case", VECTORS["sign_deterministic"], ids=lambda c: c["id"])
def test_sign_deterministic_vector(case: dict[str, str]) -> None:
    assert sign_note(case["text"], parse_skey(case["skey"])) == case["want_note"]


@pytest.mark.parametrize("case", VECTORS["vkey_parse"], ids=lambda c: c["vkey"][:24])
def test_vkey_parse_vector(case: dict[str, Any]) -> None:
    if not case["valid"]:
        with pytest.raises(KeyFormatError):
            parse_vkey(case["vkey"])
        return
    verifier = parse_vkey(case["vkey"])
    assert verifier.vkey == case["vkey"]
    if "name" in case:
        assert verifier.name == case["name"]
        assert f"{verifier.key_id:08x}" == case["key_id_hex"]
        assert base64.b64decode(case["vkey"].split("+", 2)[2])[0] == case["alg"]


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        ("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==", "must be 32 bytes"),
        (
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "unsupported algorithm byte 65",
        ),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "not 8 hex digits"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "invalid key name"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "invalid base64"),
        ("PeterNeumann+c74f20a3", "want <name>+<key id>+<key>"),
    ],
)
def test_vkey_rejections_name_the_problem(vkey: str, message: str) -> None:
    with pytest.raises(KeyFormatError, match=re.escape(message)):
        parse_vkey(vkey)


@pytest.mark.parametrize("pair", KEYPAIRS, ids=lambda p: p["vkey"].split("+")[0])
def test_published_keypairs_round_trip(pair: dict[str, str]) -> None:
    signer = parse_skey(pair["skey"])
    assert signer.skey == pair["skey"]
    assert signer.verifier == parse_vkey(pair["vkey"])
    assert signer.verifier.vkey == pair["vkey"]


def test_skey_rejections() -> None:
    skey = KEYPAIRS[0]["skey"]
    with pytest.raises(KeyFormatError, match="PRIVATE"):
        parse_skey(skey.replace("PRIVATE+KEY+", "PUBLIC+KEY+"))
    with pytest.raises(KeyFormatError, match="does not match the key"):
        parse_skey(skey.replace("+2271c621+", "+2271c622+"))
    with pytest.raises(KeyFormatError, match="want PRIVATE"):
        parse_skey(KEYPAIRS[0]["vkey"])


@pytest.mark.parametrize(
    "case", [c for c in VECTORS["checkpoint_body"] if "want_body" in c], ids=lambda c: c["origin"]
)
def test_checkpoint_marshal_vector(case: dict[str, Any]) -> None:
    checkpoint = Checkpoint(case["origin"], case["size"], base64.b64decode(case["hash_b64"]))
    assert checkpoint.marshal() == case["want_body"]
    assert Checkpoint.parse(case["want_body"]) == checkpoint


@pytest.mark.parametrize(
    "case", [c for c in VECTORS["checkpoint_body"] if "valid" in c], ids=lambda c: c.get("why", "valid")
)
def test_checkpoint_parse_vector(case: dict[str, Any]) -> None:
    if not case["valid"]:
        with pytest.raises(CheckpointError):
            Checkpoint.parse(case["body"])
        return
    checkpoint = Checkpoint.parse(case["body"])
    assert checkpoint.rest == case["want_rest"]
    assert checkpoint.extensions == ("Here's some associated data.",)
    assert checkpoint.marshal() == case["body"]


def test_checkpoint_spec_example_note_structure() -> None:
    case = next(c for c in VECTORS["checkpoint_body"] if "note" in c)
    text, signatures = split_note(case["note"])
    checkpoint = Checkpoint.parse(text, hash_size=HASH_SIZE)
    assert (checkpoint.origin, checkpoint.size) == (case["origin"], case["size"])
    assert [sig.name for sig in signatures] == [case["origin"]]
    # Without its public key the note must not be accepted as verified.
    with pytest.raises(UnverifiedNoteError, match=re.escape("example.com/behind-the-sofa")):
        open_note(case["note"], [LOG_SIGNER.verifier])


def test_legacy_go_sum_tree_note_is_a_checkpoint() -> None:
    case = next(c for c in VECTORS["checkpoint_body"] if "hash_is" in c)
    checkpoint = Checkpoint.parse(case["body"], hash_size=HASH_SIZE)
    assert checkpoint.origin == "go.sum database tree"
    assert checkpoint.size == case["size"]
    assert checkpoint.root_hash == leaf_hash(b"hello world")


# --- signing and opening --------------------------------------------------------------------


def test_generated_keypair_signs_and_verifies() -> None:
    skey, vkey = generate_keypair("kubepci.example/cluster-1/audit")
    signer, verifier = parse_skey(skey), parse_vkey(vkey)
    assert signer.verifier == verifier
    assert skey.startswith("PRIVATE+KEY+kubepci.example/cluster-1/audit+")
    assert signer.seed.hex() not in repr(signer)
    note = sign_note("hello\n", signer)
    assert open_note(note, [verifier]).verified_sigs[0].name == "kubepci.example/cluster-1/audit"


def test_cosigned_note_reports_each_signer() -> None:
    note = sign_note("body\n", LOG_SIGNER, KNOWN_SIGNER, UNKNOWN_SIGNER)
    opened = open_note(note, [LOG_SIGNER.verifier, KNOWN_SIGNER.verifier])
    assert [sig.name for sig in opened.verified_sigs] == ["Log", "Known"]
    assert [sig.name for sig in opened.unverified_sigs] == ["Unknown"]


def test_repeated_signature_lines_are_reported_once() -> None:
    note = sign_note("body\n", LOG_SIGNER, UNKNOWN_SIGNER)
    text, block = note.split("\n\n")
    doubled = f"{text}\n\n{block}{block}"
    opened = open_note(doubled, [LOG_SIGNER.verifier])
    assert len(opened.verified_sigs) == 1
    assert len(opened.unverified_sigs) == 1


def test_text_may_contain_blank_lines() -> None:
    note = sign_note("para one\n\npara two\n", LOG_SIGNER)
    assert open_note(note, [LOG_SIGNER.verifier]).text == "para one\n\npara two\n"


def _signed(text: str = "audit head\n") -> str:
    return sign_note(text, LOG_SIGNER)


@pytest.mark.parametrize(
    ("note", "error", "message"),
    [
        pytest.param(
            _signed().replace("audit head", "audit heap"),
            InvalidSignatureError,
            "does not verify",
            id="tampered-text",
        ),
        pytest.param(_signed().replace(EM, "-"), MalformedNoteError, "em dash", id="hyphen-not-em-dash"),
        pytest.param(_signed().replace("\n\n", "\n"), MalformedNoteError, "no blank line", id="no-separator"),
        pytest.param(_signed()[:-1], MalformedNoteError, "end with a newline", id="unterminated-signature"),
        pytest.param("audit head\n\n", MalformedNoteError, "non-empty", id="no-signatures"),
        pytest.param(
            _signed().replace("audit head", "audit\thead"),
            MalformedNoteError,
            "control character",
            id="control-char",
        ),
        pytest.param(
            _signed().replace("audit head", "audit\x7fhead"),
            MalformedNoteError,
            "control character",
            id="delete-char",
        ),
        pytest.param(f"audit head\n\n{EM} Log !!!!\n", MalformedNoteError, "invalid base64", id="bad-base64"),
        pytest.param(f"audit head\n\n{EM} Log AAAA\n", MalformedNoteError, "too short", id="short-signature"),
        pytest.param(
            f"audit head\n\n{EM} LogAAAAAAAA\n", MalformedNoteError, "<name> <base64>", id="no-space"
        ),
        pytest.param(
            f"audit head\n\n{EM} Log InHGIQAAAAA=\n",
            InvalidSignatureError,
            "does not verify",
            id="known-key-wrong-length",
        ),
        pytest.param(
            sign_note("audit head\n", UNKNOWN_SIGNER),
            UnverifiedNoteError,
            "signed by: Unknown",
            id="only-unknown-signers",
        ),
        pytest.param(b"audit \xff head\n\n", MalformedNoteError, "UTF-8", id="invalid-utf8"),
        pytest.param("audit \ud800 head\n\n", MalformedNoteError, "UTF-8", id="lone-surrogate"),
    ],
)
def test_hostile_notes_are_rejected(note: str | bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        open_note(note, [LOG_SIGNER.verifier])


def test_known_key_with_bad_signature_rejects_even_alongside_a_good_one() -> None:
    good = sign_note("audit head\n", LOG_SIGNER)
    forged = sign_note("other head\n", KNOWN_SIGNER).split("\n\n")[1]
    with pytest.raises(InvalidSignatureError, match="'Known'"):
        open_note(good + forged, [LOG_SIGNER.verifier, KNOWN_SIGNER.verifier])


def test_limits_on_untrusted_notes() -> None:
    block = sign_note("x\n", UNKNOWN_SIGNER).split("\n\n")[1]
    many = "x\n\n" + block * 101
    with pytest.raises(MalformedNoteError, match="101 signatures, limit 100"):
        open_note(many, [LOG_SIGNER.verifier])
    with pytest.raises(MalformedNoteError, match="over 64 bytes"):
        open_note(_signed(), [LOG_SIGNER.verifier], max_size=64)
    # "é" is one character but two bytes: the byte limit is what counts.
    text = "\u00e9" + "x" * 32 + "\n"
    note = sign_note(text, LOG_SIGNER)
    limit = len(note.encode("utf-8")) - 1
    with pytest.raises(MalformedNoteError, match=f"{limit + 1} bytes, limit {limit}"):
        open_note(note, [LOG_SIGNER.verifier], max_size=limit)


def test_sign_note_refuses_bad_text() -> None:
    with pytest.raises(MalformedNoteError, match="end with a newline"):
        sign_note("no newline", LOG_SIGNER)
    with pytest.raises(MalformedNoteError, match="control character"):
        sign_note("bell\a\n", LOG_SIGNER)
    with pytest.raises(ValueError, match="at least one signer"):
        sign_note("x\n")


def test_key_objects_validate_their_fields() -> None:
    public = LOG_SIGNER.verifier.public_key
    with pytest.raises(KeyFormatError, match="does not match"):
        NoteVerifier("Log", 0x12345678, public)
    with pytest.raises(KeyFormatError, match="invalid key name"):
        NoteVerifier.from_public_key("a+b", public)
    with pytest.raises(KeyFormatError, match="seed must be 32 bytes"):
        NoteSigner("Log", LOG_SIGNER.key_id, b"short")


# --- checkpoints ---------------------------------------------------------------------------------


def test_signed_checkpoint_of_a_merkle_tree_round_trips() -> None:
    tree = MemoryTree.from_entries([b"a", b"b", b"c"])
    checkpoint = Checkpoint("Log", tree.size, tree.root(), ("ts 1700000000",))
    note = sign_checkpoint(checkpoint, LOG_SIGNER)
    opened_checkpoint, opened = open_checkpoint(
        note, [LOG_SIGNER.verifier], origin="Log", hash_size=HASH_SIZE
    )
    assert opened_checkpoint == checkpoint
    assert opened.verified_sigs[0].key_id == LOG_SIGNER.key_id


def test_checkpoint_from_another_log_is_refused() -> None:
    note = sign_checkpoint(Checkpoint("Log", 1, leaf_hash(b"a")), LOG_SIGNER)
    with pytest.raises(CheckpointError, match="origin 'Log' is not 'Other'"):
        open_checkpoint(note, [LOG_SIGNER.verifier], origin="Other")


ROOT_B64 = base64.b64encode(b"\x01" * 32).decode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(f"Log\n012\n{ROOT_B64}\n", "canonical decimal", id="leading-zero"),
        pytest.param(f"Log\n+12\n{ROOT_B64}\n", "canonical decimal", id="plus-sign"),
        pytest.param(f"Log\n-1\n{ROOT_B64}\n", "canonical decimal", id="negative"),
        pytest.param(f"Log\n1_000\n{ROOT_B64}\n", "canonical decimal", id="underscore"),
        pytest.param(f"Log\n\u0661\n{ROOT_B64}\n", "canonical decimal", id="non-ascii-digit"),
        pytest.param(f"Log\n{1 << 64}\n{ROOT_B64}\n", "64-bit", id="size-overflow"),
        pytest.param("Log\n1\nAQ\n", "invalid base64", id="unpadded-hash"),
        pytest.param("Log\n1\nAR==\n", "not canonical base64", id="non-canonical-hash"),
        pytest.param("Log\n1\n\n", "root hash is empty", id="empty-hash"),
        pytest.param(f"Log\n1\n{ROOT_B64}\n\n", "invalid extension line ''", id="blank-extension"),
        pytest.param(f"Log\n1\n{ROOT_B64}\next\x01\n", "invalid extension line", id="control-extension"),
        pytest.param("Log\n1\nYmFuYW5hcw==\n", "7 bytes, want 32", id="short-hash"),
    ],
)
def test_checkpoint_body_rejections(body: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        Checkpoint.parse(body, hash_size=HASH_SIZE)


def test_checkpoint_limits() -> None:
    largest = Checkpoint.parse(f"Log\n{(1 << 64) - 1}\n{ROOT_B64}\n")
    assert largest.size == 18446744073709551615
    with pytest.raises(CheckpointError, match="invalid origin"):
        Checkpoint("Log\nEvil", 1, b"\x01" * 32)
    with pytest.raises(CheckpointError, match="64-bit"):
        Checkpoint("Log", -1, b"\x01" * 32)
