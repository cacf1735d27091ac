"""Retrieval stages by name; a new stage is one module here and one line below."""

from __future__ import annotations

from mnemic.operation.retrieval.stages.anchor import EventAnchorFocus
from mnemic.operation.retrieval.stages.bm25 import Bm25Recall
from mnemic.operation.retrieval.stages.dedup import Dedup
from mnemic.operation.retrieval.stages.dense import DenseRecall
from mnemic.operation.retrieval.stages.feedback import Feedback
from mnemic.operation.retrieval.stages.fusion import RrfFusion
from mnemic.operation.retrieval.stages.graph import GraphExpansion
from mnemic.operation.retrieval.stages.mmr import Diversity
from mnemic.operation.retrieval.stages.neighbors import NeighborExpansion
from mnemic.operation.retrieval.stages.rerank import Rerank
from mnemic.operation.retrieval.stages.session import SessionFocus
from mnemic.operation.retrieval.stages.speaker import SpeakerBoost
from mnemic.operation.retrieval.stages.speaker_recall import SpeakerRecall
from mnemic.operation.retrieval.stages.time import TimeFocus
from mnemic.operation.retrieval.stages.topic import TopicRecall
from mnemic.operation.retrieval.stages.tree import TreeDescent

STAGES = {
    cls.name: cls
    for cls in (
        Bm25Recall,
        DenseRecall,
        TopicRecall,
        SpeakerRecall,
        TimeFocus,
        EventAnchorFocus,
        RrfFusion,
        Feedback,
        SpeakerBoost,
        SessionFocus,
        NeighborExpansion,
        Dedup,
        Diversity,
        TreeDescent,
        GraphExpansion,
        Rerank,
    )
}

__all__ = ["STAGES"]
