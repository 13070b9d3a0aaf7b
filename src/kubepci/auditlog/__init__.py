"""Tamper-evident audit trail (PCI DSS v4.0.1 requirement 10).

The trail is an RFC 9162 Merkle log over append order whose tree heads are published as C2SP
signed-note checkpoints, so that any later alteration, deletion or reordering of entries is
detectable by anyone holding an earlier checkpoint. Submodules:

* :mod:`kubepci.auditlog.merkle` -- pure tree hashing, proof generation and proof verification.
* :mod:`kubepci.auditlog.checkpoint` -- Ed25519 signed notes and tlog-checkpoint bodies.
"""

__all__: list[str] = []
