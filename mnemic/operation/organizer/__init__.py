"""The Organizer: the memory tree (topics over items) and the graph of cross-links.

- :mod:`.tree`: the tree planned in memory: insertion, splits, topic merges, summaries.
- :mod:`.graph`: edges derived without an LLM (entities, time, sessions, supersedes).
- :mod:`.reorganizer`: one pass (duplicates merged, tree, graph) applied in one transaction.
- :mod:`.job`: the pass as a background job, queued on the ``organizer`` policy.
"""

from mnemic.operation.organizer.reorganizer import Organizer, OrganizeReport

__all__ = ["OrganizeReport", "Organizer"]
