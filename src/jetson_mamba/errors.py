"""Every failure the tool reports: one base class, one exit code and one fix per kind.

Only the CLI layer turns these into exit codes; library code raises them.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from jetson_mamba.results import SCHEMA_VERSION


class JetsonMambaError(Exception):
    """Base error: `message` says what is wrong, `fix` the exact next step."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, fix: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def to_json(self) -> Dict[str, Any]:
        """The `--json` error document, versioned like every result document."""
        return {"schema_version": SCHEMA_VERSION, "error": self.kind, "exit_code": self.exit_code, "message": self.message, "fix": self.fix}

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\nfix: {self.fix}"


class UsageError(JetsonMambaError):
    """Bad command-line input (an unknown arch, a malformed spec)."""

    exit_code = 2
    kind = "usage"


class MissingDependencyError(JetsonMambaError):
    """A tool or package the command needs is not installed (nvcc, torch, ultralytics)."""

    exit_code = 3
    kind = "missing-dependency"


class PatchError(JetsonMambaError):
    """A patch cannot be applied or reverted safely; nothing was changed."""

    exit_code = 4
    kind = "patch"


class PermissionDeniedError(JetsonMambaError):
    """A target (site-packages, an archive dir) is not writable."""

    exit_code = 5
    kind = "permission"


class BuildError(JetsonMambaError):
    """Compiling a wheel failed; the message carries the diagnosis of the log."""

    exit_code = 6
    kind = "build"


class ArchiveError(JetsonMambaError):
    """An archive, manifest or wheel is malformed or does not match its record."""

    exit_code = 7
    kind = "archive"


class NoMatchingWheelError(JetsonMambaError):
    """No wheel in the archive fits this machine; the message lists every rejection."""

    exit_code = 8
    kind = "no-matching-wheel"


class InstallError(JetsonMambaError):
    """Installing failed (and was rolled back)."""

    exit_code = 9
    kind = "install"


class VerificationError(JetsonMambaError):
    """A numerical check failed: the kernels compute wrong numbers on this machine."""

    exit_code = 10
    kind = "verification"


class BackendUnavailableError(JetsonMambaError):
    """The requested kernel backend (cuda, triton, torch) cannot run here."""

    exit_code = 11
    kind = "backend"


class BackendContractError(BackendUnavailableError):
    """A module registered as a kernel backend lacks a function its op requires (ops.backend.CONTRACTS)."""

    kind = "backend-contract"


class InternalError(JetsonMambaError):
    """An unexpected exception (a bug in jetson-mamba): the CLI's last resort reports it in one line."""

    exit_code = 70  # EX_SOFTWARE (sysexits.h)
    kind = "internal"


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as shells report Ctrl-C
