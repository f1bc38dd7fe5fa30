"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class DVError(Exception):
    """A problem the user can fix: a missing folder, a bad image, an unknown name.

    `hint` says what to do about it; the CLI prints `error: <message> (<hint>)`.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class MissingWeightsError(DVError):
    """Model weights are not on this machine and cannot be fetched now."""

    exit_code = 3


class Interrupted(DVError):
    """A run was stopped by Ctrl-C or SIGTERM after saving its state."""

    exit_code = 130
