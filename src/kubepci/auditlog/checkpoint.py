"""C2SP signed notes with Ed25519 and C2SP tlog-checkpoint bodies.

A Merkle root only proves anything once it has left the box: the log signs a *checkpoint*
(origin, tree size, root hash) so that a copy held elsewhere -- a WORM bucket, a witness, an
assessor -- pins the history and any later rewrite is caught (PCI DSS 10.3.2-10.3.4). The formats
are the public C2SP ``signed-note`` and ``tlog-checkpoint`` specifications, so checkpoints can be
checked by third-party tooling, not only by kubepci.

Key strings::

    vkey: <name>+<8 hex key id>+base64(0x01 || 32-byte Ed25519 public key)
    skey: PRIVATE+KEY+<name>+<8 hex key id>+base64(0x01 || 32-byte Ed25519 seed)

Base64 may itself contain ``+``, so keys are split on the first two (vkey) or four (skey) ``+`` only.
The key id is the first four bytes of ``SHA-256(name || 0x0A || 0x01 || public key)``, big-endian.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kubepci.errors import IntegrityError

__all__ = [
    "ALG_ED25519",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "Checkpoint",
    "CheckpointError",
    "InvalidSignatureError",
    "KeyFormatError",
    "MalformedNoteError",
    "NoteError",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "OpenedNote",
    "UnverifiedNoteError",
    "compute_key_id",
    "generate_keypair",
    "open_checkpoint",
    "open_note",
    "parse_skey",
    "parse_vkey",
    "sign_checkpoint",
    "sign_note",
    "split_note",
]

ALG_ED25519 = 0x01
MAX_NOTE_SIZE = 1 << 20  # bytes; bounds work done on untrusted input
MAX_SIGNATURES = 100  # the spec requires accepting at least 16
_SIG_PREFIX = "\u2014 "  # EM DASH + space starts every signature line
_SKEY_PREFIX = "PRIVATE+KEY+"
_KEY_ID_RE = re.compile(r"[0-9a-fA-F]{8}")
_SIZE_RE = re.compile(r"0|[1-9][0-9]*")
_ED25519_KEY_SIZE = 32
_ED25519_SIG_SIZE = 64


class NoteError(IntegrityError):
    """Base class for signed-note and checkpoint failures."""


class KeyFormatError(NoteError):
    """A vkey or skey string is malformed, or its key id does not match its key."""


class MalformedNoteError(NoteError):
    """The note text or its signature block breaks the signed-note grammar."""


class InvalidSignatureError(NoteError):
    """A signature from a *known* key does not verify: the note must be rejected outright."""


class UnverifiedNoteError(NoteError):
    """The note is well formed but carries no signature from any of the given keys."""


class CheckpointError(NoteError):
    """A checkpoint body breaks the tlog-checkpoint grammar, or names an unexpected origin."""


def _b64decode(text: str) -> bytes:
    """Strict standard base64 (padding required, no stray characters)."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"invalid base64: {exc}") from exc


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _has_control(text: str) -> bool:
    return any((ord(ch) < 0x20 and ch != "\n") or ord(ch) == 0x7F for ch in text)


def _valid_name(name: str) -> bool:
    """Key names are non-empty, without Unicode spaces, '+' or control characters."""
    return bool(name) and "+" not in name and not any(ch.isspace() or not ch.isprintable() for ch in name)


def compute_key_id(name: str, alg: int, key: bytes) -> int:
    """C2SP key id: first four bytes of SHA-256(name || LF || alg || key), big-endian."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """An Ed25519 public key under a name, as named in a vkey string."""

    name: str
    key_id: int
    public_key: bytes

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise KeyFormatError(f"invalid key name {self.name!r}")
        if len(self.public_key) != _ED25519_KEY_SIZE:
            raise KeyFormatError(f"Ed25519 public key must be 32 bytes, got {len(self.public_key)}")
        if self.key_id != compute_key_id(self.name, ALG_ED25519, self.public_key):
            raise KeyFormatError(f"key id {self.key_id:08x} does not match key {self.name!r}")

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> NoteVerifier:
        return cls(name, compute_key_id(name, ALG_ED25519, public_key), public_key)

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_id:08x}+{_b64encode(bytes([ALG_ED25519]) + self.public_key)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != _ED25519_SIG_SIZE:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class NoteSigner:
    """An Ed25519 private key (32-byte seed) under a name, as named in an skey string."""

    name: str
    key_id: int
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise KeyFormatError(f"invalid key name {self.name!r}")
        if len(self.seed) != _ED25519_KEY_SIZE:
            raise KeyFormatError(f"Ed25519 seed must be 32 bytes, got {len(self.seed)}")
        if self.key_id != self.verifier.key_id:
            raise KeyFormatError(f"key id {self.key_id:08x} does not match the key of {self.name!r}")

    @property
    def verifier(self) -> NoteVerifier:
        public = Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes_raw()
        return NoteVerifier.from_public_key(self.name, public)

    @property
    def skey(self) -> str:
        key = _b64encode(bytes([ALG_ED25519]) + self.seed)
        return f"{_SKEY_PREFIX}{self.name}+{self.key_id:08x}+{key}"

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def _parse_key_parts(kind: str, name: str, key_id_hex: str, key_b64: str) -> tuple[int, bytes]:
    if not _valid_name(name):
        raise KeyFormatError(f"{kind}: invalid key name {name!r}")
    if not _KEY_ID_RE.fullmatch(key_id_hex):
        raise KeyFormatError(f"{kind}: key id {key_id_hex!r} is not 8 hex digits")
    try:
        key = _b64decode(key_b64)
    except ValueError as exc:
        raise KeyFormatError(f"{kind}: {exc}") from None
    if not key or key[0] != ALG_ED25519:
        raise KeyFormatError(f"{kind}: unsupported algorithm byte {key[:1].hex() or 'none'}")
    if len(key) != 1 + _ED25519_KEY_SIZE:
        raise KeyFormatError(f"{kind}: Ed25519 key must be 32 bytes, got {len(key) - 1}")
    return int(key_id_hex, 16), key[1:]


def parse_vkey(vkey: str) -> NoteVerifier:
    """Parse ``name+keyid+base64`` (split on the first two '+'); the key id must match the key."""
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise KeyFormatError("vkey: want <name>+<key id>+<key>")
    key_id, public_key = _parse_key_parts("vkey", *parts)
    return NoteVerifier(parts[0], key_id, public_key)


def parse_skey(skey: str) -> NoteSigner:
    """Parse ``PRIVATE+KEY+name+keyid+base64`` (split on the first four '+')."""
    parts = skey.split("+", 4)
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise KeyFormatError("skey: want PRIVATE+KEY+<name>+<key id>+<key>")
    key_id, seed = _parse_key_parts("skey", parts[2], parts[3], parts[4])
    return NoteSigner(parts[2], key_id, seed)


def generate_keypair(name: str) -> tuple[str, str]:
    """Fresh Ed25519 ``(skey, vkey)`` strings for a log or witness called ``name``."""
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    signer = NoteSigner(name, compute_key_id(name, ALG_ED25519, public), seed)
    return signer.skey, signer.verifier.vkey


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, key id and the raw signature bytes after the id."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {_b64encode(blob)}\n"


class OpenedNote(NamedTuple):
    """Result of :func:`open_note`; a tuple so callers can unpack ``text, verified, unverified``."""

    text: str
    verified_sigs: tuple[NoteSignature, ...]
    unverified_sigs: tuple[NoteSignature, ...]


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNoteError("note text must end with a newline")
    if _has_control(text):
        raise MalformedNoteError("note text contains a control character other than newline")


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_SIG_PREFIX):
        raise MalformedNoteError(f"signature line does not start with an em dash: {line[:40]!r}")
    name, space, blob_b64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not space or not _valid_name(name) or not blob_b64:
        raise MalformedNoteError(f"signature line is not '<name> <base64>': {line[:40]!r}")
    try:
        blob = _b64decode(blob_b64)
    except ValueError as exc:
        raise MalformedNoteError(f"signature of {name!r}: {exc}") from None
    if len(blob) < 5:
        raise MalformedNoteError(f"signature of {name!r} is too short ({len(blob)} bytes)")
    return NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:])


def split_note(
    note: str | bytes, *, max_size: int = MAX_NOTE_SIZE, max_signatures: int = MAX_SIGNATURES
) -> tuple[str, tuple[NoteSignature, ...]]:
    """Split a note into its text and signature lines without checking any signature."""
    if len(note) > max_size:  # characters <= bytes: a cheap pre-check before any decoding
        raise MalformedNoteError(f"note is over {max_size} bytes")
    try:
        raw = note.encode("utf-8") if isinstance(note, str) else bytes(note)
        decoded = raw.decode("utf-8")
    except UnicodeError:
        raise MalformedNoteError("note is not valid UTF-8") from None
    if len(raw) > max_size:
        raise MalformedNoteError(f"note is {len(raw)} bytes, limit {max_size}")
    if _has_control(decoded):
        raise MalformedNoteError("note contains a control character other than newline")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("note has no blank line before its signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNoteError("signature block must be non-empty and end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > max_signatures:
        raise MalformedNoteError(f"note has {len(lines)} signatures, limit {max_signatures}")
    return text, tuple(_parse_signature_line(line) for line in lines)


def sign_note(text: str, *signers: NoteSigner) -> str:
    """Signed note over ``text`` with one signature line per signer, in the order given."""
    if not signers:
        raise ValueError("sign_note needs at least one signer")
    _check_text(text)
    message = text.encode("utf-8")
    lines = [NoteSignature(s.name, s.key_id, s.sign(message)).line() for s in signers]
    return text + "\n" + "".join(lines)


def open_note(
    note: str | bytes,
    verifiers: Iterable[NoteVerifier],
    *,
    max_size: int = MAX_NOTE_SIZE,
    max_signatures: int = MAX_SIGNATURES,
) -> OpenedNote:
    """Verify a signed note against the known ``verifiers``.

    Signatures by unknown (name, key id) pairs are ignored but returned, so a caller can see
    cosigners it does not yet trust. Every signature by a known key must verify -- one bad one
    rejects the note (fail closed) -- and at least one must be present.
    """
    known: dict[tuple[str, int], NoteVerifier] = {}
    for verifier in verifiers:
        previous = known.setdefault((verifier.name, verifier.key_id), verifier)
        if previous.public_key != verifier.public_key:
            raise KeyFormatError(
                f"two different keys share name {verifier.name!r} and id {verifier.key_id:08x}"
            )
    text, signatures = split_note(note, max_size=max_size, max_signatures=max_signatures)
    message = text.encode("utf-8")
    verified: dict[tuple[str, int], NoteSignature] = {}
    unverified: dict[NoteSignature, None] = {}
    for sig in signatures:
        key = known.get((sig.name, sig.key_id))
        if key is None:
            unverified.setdefault(sig)
            continue
        if not key.verify(message, sig.signature):
            raise InvalidSignatureError(f"signature by {sig.name!r} ({sig.key_id:08x}) does not verify")
        verified.setdefault((sig.name, sig.key_id), sig)
    if not verified:
        names = ", ".join(sorted({sig.name for sig in signatures}))
        raise UnverifiedNoteError(f"no signature from a known key (signed by: {names})")
    return OpenedNote(text, tuple(verified.values()), tuple(unverified))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A C2SP tlog-checkpoint body: the log's identity, tree size and root, plus extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _has_control(self.origin):
            raise CheckpointError(f"invalid origin {self.origin!r}")
        if not 0 <= self.size < 1 << 64:
            raise CheckpointError(f"tree size {self.size} is not a 64-bit unsigned integer")
        if not self.root_hash:
            raise CheckpointError("root hash is empty")
        for line in self.extensions:
            if not line or "\n" in line or _has_control(line):
                raise CheckpointError(f"invalid extension line {line!r}")

    @property
    def rest(self) -> str:
        """Extension lines as they appear in the body (each newline-terminated)."""
        return "".join(line + "\n" for line in self.extensions)

    def marshal(self) -> str:
        return f"{self.origin}\n{self.size}\n{_b64encode(self.root_hash)}\n{self.rest}"

    @classmethod
    def parse(cls, body: str, *, hash_size: int | None = None) -> Checkpoint:
        """Parse a checkpoint body, rejecting any non-canonical encoding of size or hash."""
        if not body.endswith("\n"):
            raise CheckpointError("checkpoint body must end with a newline")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(f"checkpoint needs origin, size and root lines, got {len(lines)} line(s)")
        origin, size_text, hash_text, *extensions = lines
        if not _SIZE_RE.fullmatch(size_text):
            raise CheckpointError(f"tree size {size_text!r} is not a canonical decimal")
        try:
            root = _b64decode(hash_text)
        except ValueError as exc:
            raise CheckpointError(f"root hash: {exc}") from None
        if _b64encode(root) != hash_text:
            raise CheckpointError(f"root hash {hash_text!r} is not canonical base64")
        checkpoint = cls(origin, int(size_text), root, tuple(extensions))
        if hash_size is not None and len(root) != hash_size:
            raise CheckpointError(f"root hash is {len(root)} bytes, want {hash_size}")
        return checkpoint


def sign_checkpoint(checkpoint: Checkpoint, *signers: NoteSigner) -> str:
    """Signed note whose text is the checkpoint body."""
    return sign_note(checkpoint.marshal(), *signers)


def open_checkpoint(
    note: str | bytes, verifiers: Iterable[NoteVerifier], *, origin: str, hash_size: int | None = None
) -> tuple[Checkpoint, OpenedNote]:
    """Verify a signed checkpoint and check it belongs to the log called ``origin``."""
    opened = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(opened.text, hash_size=hash_size)
    if checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    return checkpoint, opened
