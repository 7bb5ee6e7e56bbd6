"""Errors that reach the operator.

Every error drorch raises on purpose is a DrorchError: a message that says
what is wrong, a hint that says what to do, and the process exit code the CLI
uses.  Only cli/render.py turns them into output and exit codes.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran and failed
EXIT_USAGE = 2  # bad usage or bad policy: nothing was attempted


class DrorchError(Exception):
    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(DrorchError):
    """The command line asked for something impossible."""

    exit_code = EXIT_USAGE


class PolicyError(DrorchError):
    """One or more policy problems, each `FILE:LINE:COL: key: message`."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str], hint: str | None = None):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems) or "invalid policy", hint)


class RepositoryError(DrorchError):
    """The repository is missing, unreadable, of an unknown format or damaged."""


class StorageError(DrorchError):
    """A storage operation failed (after any retries)."""


class NotFoundError(StorageError):
    """A key that should exist does not."""


class LockedError(DrorchError):
    """Another process holds the lock that this operation needs."""


class IntegrityError(DrorchError):
    """Stored bytes do not match their recorded checksum."""


class RestoreError(DrorchError):
    """A restore could not be done (target, selection, or data problems)."""


class SourceError(DrorchError):
    """The source could not be read (or written back)."""


class HostError(DrorchError):
    """A host (this machine or one reached over SSH) could not do what was asked."""


class HostKeyError(HostError):
    """The host's SSH key is unknown or changed: nothing was sent to it."""


class HostAuthError(HostError):
    """The host refused our key (or the key could not be loaded)."""


class HostUnreachableError(HostError):
    """The connection could not be made or kept, after retries."""
