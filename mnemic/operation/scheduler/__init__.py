"""The Memory Scheduler: per-session working memory and next-scene prediction.

- :mod:`.working`: a bounded working memory per session (LRU), searched in microseconds.
- :mod:`.predict`: next-scene prediction, what the next turns will need, from the recent ones.
- :mod:`.scheduler`: ties them to a store: observe new turns, preload, serve lookups, monitor.
"""

from mnemic.operation.scheduler.predict import NextScenePredictor
from mnemic.operation.scheduler.scheduler import Scheduler, SchedulerStats
from mnemic.operation.scheduler.working import WorkingMemory

__all__ = ["NextScenePredictor", "Scheduler", "SchedulerStats", "WorkingMemory"]
