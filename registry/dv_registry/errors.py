"""Errors a user can cause; the CLI prints each as one line and exits non-zero."""

from __future__ import annotations


class RegistryError(Exception):
    """A registry problem the user can fix: a bad name, a conflict, a damaged archive.

    `hint` says what to do about it; `str()` gives `message (hint)`.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class NotFoundError(RegistryError):
    """A name, tag, digest, blob or file that is not in the registry."""


class NewerSchemaError(RegistryError):
    """A manifest or archive written by a newer dv than this one."""


class LockTimeoutError(RegistryError):
    """Another process held the registry lock for longer than we were willing to wait."""
