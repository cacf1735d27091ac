"""The organizer as a background job: one reorganization pass over a scope per job.

``add`` queues one (through :func:`due`) once ``organizer.every_adds`` active items of the
scope wait outside the tree; jobs of a scope run in submission order, so the pass sees what
the extraction jobs before it stored. ``Memory.reorganize`` runs a pass on demand.
"""

from __future__ import annotations

from typing import Any

from mnemic.config import OrganizerConfig
from mnemic.infra.store.base import ItemFilter, Store
from mnemic.operation.organizer.reorganizer import ACTOR, Organizer

JOB_KIND = "organize"


class OrganizeJob:
    def __init__(self, organizer: Organizer) -> None:
        self.organizer = organizer

    def __call__(self, payload: dict[str, Any]) -> None:
        self.organizer.run(payload["user_id"], payload["cube_id"], actor=ACTOR)


def waiting(store: Store, user_id: str, cube_id: str) -> tuple[int, int]:
    """(items placed in the tree, active items not placed yet), about: two cheap counts
    (items deleted since they were placed count as placed until the next pass)."""
    placed = sum(t.size for t in store.topics(user_id, cube_id))
    return placed, max(0, store.count_items(user_id, cube_id, ItemFilter()) - placed)


def due(store: Store, config: OrganizerConfig, user_id: str, cube_id: str) -> bool:
    """Whether the policy wants a pass now: ``every_adds`` items wait, and at least
    ``growth`` times the placed ones."""
    if config.every_adds <= 0:
        return False
    placed, unplaced = waiting(store, user_id, cube_id)
    return unplaced >= max(config.every_adds, config.growth * placed)
