"""mnemic: a memory operating system for LLM agents."""

from mnemic.config import Settings, load_settings
from mnemic.errors import (
    AccessDenied,
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidInput,
    MnemicError,
    NotFound,
    SchemaTooNew,
    StoreError,
)
from mnemic.models import (
    CubeManifest,
    HistoryEntry,
    MemoryItem,
    MemoryKind,
    MemoryLayer,
    MemoryStatus,
    SearchHit,
    Source,
)
from mnemic.sdk import Memory, MemOS, SearchFilters

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "BackendUnavailable",
    "ConfigError",
    "Conflict",
    "CubeManifest",
    "HistoryEntry",
    "InvalidInput",
    "MemOS",
    "Memory",
    "MemoryItem",
    "MemoryKind",
    "MemoryLayer",
    "MemoryStatus",
    "MnemicError",
    "NotFound",
    "SchemaTooNew",
    "SearchFilters",
    "SearchHit",
    "Settings",
    "Source",
    "StoreError",
    "load_settings",
]
