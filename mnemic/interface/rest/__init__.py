"""The REST API (``mnemic serve``): FastAPI over the SDK. Needs the ``server`` extra."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mnemic.config import Settings
    from mnemic.sdk import Memory


def create_app(settings: Settings | None = None, *, memory: Memory | None = None) -> FastAPI:
    try:
        from mnemic.interface.rest.app import create_app as make
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise _missing(exc) from exc
    return make(settings, memory=memory)


def _missing(exc: ImportError) -> Any:
    from mnemic.errors import ConfigError

    return ConfigError(f"the REST server needs its extra: pip install 'mnemic[server]' ({exc})")


__all__ = ["create_app"]
