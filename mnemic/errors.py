"""The exception hierarchy of mnemic: each name says what happened, each message what to do."""

from __future__ import annotations


class MnemicError(Exception):
    """Base class of every error mnemic raises on purpose."""


class ConfigError(MnemicError):
    """The configuration is invalid or names a backend that is not installed."""


class InvalidInput(MnemicError, ValueError):
    """An argument was rejected; nothing was written."""


class NotFound(MnemicError, KeyError):
    """The item, cube or user does not exist in the caller's scope."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else "not found"


class AccessDenied(MnemicError):
    """The caller's user may not touch this cube or item."""


class Conflict(MnemicError):
    """The write lost a race or contradicts the stored state (e.g. a stale version)."""


class StoreError(MnemicError):
    """The storage backend failed; the message names the file or server involved."""


class SchemaTooNew(StoreError):
    """The data was written by a newer mnemic; upgrade mnemic to open it."""


class BackendUnavailable(MnemicError):
    """A model backend (embedder, LLM) could not be loaded or reached."""
