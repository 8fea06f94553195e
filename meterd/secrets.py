"""Secrets come from a ``*_file`` key or an environment variable, never inline, never logged."""

from __future__ import annotations

import os
from pathlib import Path


class SecretError(ValueError):
    """A configured secret file cannot be read."""


def read_secret(path: Path | None, env_var: str) -> str | None:
    """Return the secret from ``path`` (stripped of the trailing newline), else ``$env_var``, else None."""
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
    return os.environ.get(env_var) or None


class Redacted(str):
    """A string whose repr never shows its value, so secrets cannot leak into logs."""

    def __repr__(self) -> str:
        return "'***'"
