"""The KubepciError tree.

Library code raises these; only ``kubepci.cli`` turns them into exit codes. Each class carries
the exit code DESIGN.md assigns to its family so the CLI never has to guess.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InputError",
    "IntegrityError",
    "KubepciError",
    "UsageError",
]


class KubepciError(Exception):
    """Base of every error kubepci raises on purpose."""

    exit_code: int = 70

    def diagnostics(self) -> str:
        """A one-paragraph message meant for a human at a terminal."""
        return str(self)


class UsageError(KubepciError):
    """The command line or a parameter is wrong."""

    exit_code = 2


class ConfigError(KubepciError):
    """kubepci.yaml or waivers.yaml is invalid; the message names file and line."""

    exit_code = 2


class InputError(KubepciError):
    """Input could not be read at all (files, cluster)."""

    exit_code = 3


class IntegrityError(KubepciError):
    """The audit trail failed verification."""

    exit_code = 4
