"""One typed configuration: defaults, then a TOML file, then MNEMIC_* environment variables.

Backends are chosen by name (``embedder.backend = "onnx"``); nested fields map to environment
variables with a double underscore, e.g. ``MNEMIC_EMBEDDER__BACKEND=openai``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mnemic.errors import ConfigError


def default_home() -> Path:
    """``MNEMIC_HOME`` if set, else the platform's user data directory."""
    env = os.environ.get("MNEMIC_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("mnemic", appauthor=False))


class EmbedderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["onnx", "sentence-transformers", "openai"] = "onnx"
    # onnx: "all-MiniLM-L6-v2" (shipped); sentence-transformers: a model name or path;
    # openai: the endpoint's model name, e.g. "text-embedding-3-small" or "nomic-embed-text".
    model: str = "all-MiniLM-L6-v2"
    quantized: bool = True  # onnx: the int8 export (see docs/design.md for the measurement)
    batch_size: int = Field(default=64, ge=1, le=4096)
    # onnx: intra-op threads; 0 lets the runtime choose. One is the default: with another
    # process busy on a 2-core machine, a 2-thread query took 9.1 ms p50 against 3.5 ms,
    # and batches ran 96 texts/s against 129 (python -m mnemic.bench.embedders)
    threads: int = Field(default=1, ge=0)
    base_url: str = "http://localhost:11434/v1"  # openai-compatible (Ollama's default)
    api_key: str | None = None
    dimensions: int | None = None  # openai: ask the endpoint for this many dimensions
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=3, ge=0)


class LLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["none", "openai", "hf"] = "none"
    # openai: any OpenAI-compatible chat endpoint (OpenAI, Ollama, vLLM, llama.cpp server);
    # hf: a local transformers causal model (folder or cached hub name; needs the torch extra)
    model: str = "llama3.2"
    base_url: str = "http://localhost:11434/v1"  # Ollama's default
    api_key: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    device: str = "cpu"  # hf: torch device
    # tokens generated per reply at most (hf; openai: max_tokens of structured replies)
    max_new_tokens: int = Field(default=2048, ge=1)


class StoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["sqlite", "postgres"] = "sqlite"
    # sqlite: the database lives in <home>/mnemic.db unless a path is given
    path: Path | None = None
    # postgres: a libpq connection string, e.g. "postgresql://mnemic@db-host/mnemic"
    # (needs the extra: pip install 'mnemic[postgres]'; the server needs pgvector >= 0.6)
    dsn: str | None = None
    pool_size: int = Field(default=8, ge=1, le=1000)  # postgres connections per process

    @model_validator(mode="after")
    def _postgres_needs_dsn(self) -> StoreConfig:
        if self.backend == "postgres" and not self.dsn:
            raise ValueError('store.backend = "postgres" needs store.dsn (a connection string)')
        return self


class JobsConfig(BaseModel):
    """Where add's background jobs (embedding, extraction) are queued."""

    model_config = ConfigDict(extra="forbid")

    # auto: in the PostgreSQL store's database when the store is PostgreSQL (every process
    # sharing the store shares the jobs), else in a journal file beside the SQLite database;
    # local: that journal file (jobs stay with the process that queued them or the next one
    # on this machine); postgres: the store's database (needs store.backend = "postgres")
    backend: Literal["auto", "local", "postgres"] = "auto"
    # postgres: a claimed job whose process sent no heartbeat for this long (it was killed,
    # its host went down) is run again by another process
    lease_s: float = Field(default=30.0, ge=1.0, le=86_400)


class RerankerConfig(BaseModel):
    """The ``rerank`` stage's model: a cross-encoder reads the query with each of the best
    candidates and scores how well the candidate answers it."""

    model_config = ConfigDict(extra="forbid")

    # cross-encoder: a local transformers sequence-classification model (a folder, or a hub
    # name already in the local cache; needs the torch extra), e.g. a download of
    # cross-encoder/ms-marco-MiniLM-L6-v2; http: a server's POST {base_url}/rerank in the
    # Cohere/Jina form (vLLM, Infinity, Jina, Cohere, ...)
    backend: Literal["cross-encoder", "http"] = "cross-encoder"
    model: str = ""  # no default: no reranker's weights ship with mnemic
    base_url: str = "http://localhost:8000/v1"
    api_key: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    # the best `candidates` after the stages before it are scored; they keep their place above
    # the rest, in the order of weight / (rrf_k + rerank rank) + (1 - weight) / (rrf_k + rank
    # before): 1 is the cross-encoder's order, 0 leaves the order as it was
    candidates: int = Field(default=30, ge=1, le=1000)
    weight: float = Field(default=1.0, ge=0, le=1)
    # cross-encoder: tokens per (query, memory) pair, pairs per forward pass, torch threads
    max_length: int = Field(default=256, ge=16, le=4096)
    batch_size: int = Field(default=32, ge=1, le=1024)
    threads: int = Field(default=0, ge=0)


class RetrievalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # the recipe: stages run in this order (see mnemic/operation/retrieval/stages/);
    # "neighbors" is available but off: on LoCoMo it cost 0.2-1.2 points (bench --ablate)
    stages: list[str] = Field(
        default_factory=lambda: [
            "bm25",
            "feedback",
            "dense",
            "topic",
            "speaker_recall",
            "time",
            "anchor",
            "fusion",
            "speaker",
            "session",
        ]
    )
    candidates: int = Field(default=50, ge=1, le=10_000)  # per recall stage
    # fusion: weighted reciprocal rank, weight / (rrf_k + rank) per recall list
    rrf_k: int = Field(default=20, ge=1)  # 10-20 is a plateau on LoCoMo dev; 60 loses 4 pts
    dense_weight: float = Field(default=1.0, ge=0)
    fulltext_weight: float = Field(default=1.0, ge=0)
    # bm25: weight of the BM25 score over an item's index keys (the item with the turns
    # before it) added to the score over its own words; 2-5 is a plateau on LoCoMo dev
    keys_weight: float = Field(default=2.0, ge=0)
    # bm25: search the names of the speakers a query names too (off: left out, as a name in a
    # turn's words is mostly someone speaking to them; LoCoMo dev four at 1,000 tokens with
    # topic on: 0.818 -> 0.825, multi-hop 0.414 -> 0.432)
    bm25_speaker_names: bool = False
    # time: recall again within the span the query names, widened by time_slack_days after
    # its end; those lists count time_weight times a plain recall list in fusion
    time_slack_days: int = Field(default=14, ge=0, le=3650)
    time_weight: float = Field(default=1.0, ge=0)
    # topic: dense recall of a query that names speakers, without the names; the list
    # counts topic_weight times the dense list in fusion (LoCoMo dev four at 1,000 tokens:
    # 0.808 -> 0.818, multi-hop 0.378 -> 0.414; weight 0.5 0.813, 2.0 0.813)
    topic_weight: float = Field(default=1.0, ge=0)
    # feedback: words shared by >= 2 of the best feedback_docs hits, up to feedback_terms,
    # searched with the query; their list joins fusion at feedback_weight
    feedback_docs: int = Field(default=5, ge=2, le=100)
    feedback_terms: int = Field(default=8, ge=1, le=64)
    feedback_weight: float = Field(default=0.5, ge=0)
    # speaker_recall: full-text and dense lists recalled among each named speaker's own items
    # join fusion at speaker_recall_weight times a plain list (LoCoMo dev four at 1,000
    # tokens: 0.830 -> 0.837, multi-hop 0.441 -> 0.477; weight 0.25 0.830, 0.75 0.835, 1.0
    # 0.837)
    speaker_recall_weight: float = Field(default=0.5, ge=0)
    # speaker: score factor 1 + speaker_boost for items said by a speaker the query names
    speaker_boost: float = Field(default=0.5, ge=0)
    # session: factor 1 + session_weight * (session's summed score / best session's)
    session_weight: float = Field(default=0.5, ge=0)
    # dedup: of candidates whose word sets overlap this much (Jaccard), keep the best
    dedup_jaccard: float = Field(default=0.9, gt=0, le=1)
    # mmr: of the best mmr_candidates, each next pick maximises mmr_lambda * relevance -
    # (1 - mmr_lambda) * its highest cosine to the picks above it
    mmr_lambda: float = Field(default=0.7, ge=0, le=1)
    mmr_candidates: int = Field(default=30, ge=2, le=1000)
    # neighbors: the best `neighbor_seeds` hits bring their session neighbours within
    # `neighbor_window` turns, at the seed's score times neighbor_decay ** distance
    neighbor_seeds: int = Field(default=5, ge=0)
    neighbor_window: int = Field(default=1, ge=0, le=20)
    neighbor_decay: float = Field(default=0.5, gt=0, le=1)
    # tree: descend the memory tree, the `tree_topics` topics whose centroids are closest to
    # the query, then their best `tree_leaves` items by similarity: a list that joins the
    # candidates at tree_weight (after feedback; LoCoMo dev: weight 0.5 gained multi-hop but
    # cost single-hop, 0.25 kept both)
    tree_topics: int = Field(default=3, ge=1, le=100)
    tree_leaves: int = Field(default=10, ge=1, le=10_000)
    tree_weight: float = Field(default=0.25, ge=0)
    # graph: the best `graph_seeds` hits bring the items linked to them (edges of
    # graph_kinds) at the seed's score times graph_decay
    graph_seeds: int = Field(default=5, ge=0)
    graph_decay: float = Field(default=0.5, gt=0, le=1)
    graph_kinds: list[str] = Field(
        default_factory=lambda: ["same_entity", "before", "derived_from", "supersedes"]
    )
    # rerank (off by default: no cross-encoder ships with mnemic; add "rerank" to the stages,
    # last, and say which model)
    reranker: RerankerConfig = Field(default_factory=RerankerConfig)


class ReaderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # deterministic: raw turns plus memories extracted by rules (no LLM); llm: the configured
    # LLM extracts the memories (raw turns are always kept)
    backend: Literal["deterministic", "llm"] = "deterministic"
    # each raw turn is indexed with this many preceding turns of its session as context
    context_turns: int = Field(default=2, ge=0, le=10)
    # ... and this many following turns of the same add (a thing introduced in one turn is
    # often named in the next: "I adopted another pup" / "What's his name?" / "Scout");
    # LoCoMo dev four at 1,000 tokens: 0 -> 0.826, 2 -> 0.828, held-out two 0.744 -> 0.761
    context_after: int = Field(default=2, ge=0, le=10)
    # index each turn with the day it was said and the absolute dates its time expressions
    # mean ("yesterday: 7 May 2023"); off only to measure what it is worth
    date_keys: bool = True
    # derive facts, preferences and events from raw turns (in the background job of add)
    extract: bool = True
    # llm: turns per extraction call (a window of the conversation)
    llm_window_chars: int = Field(default=6000, ge=500)
    # search first waits up to this long for the scope's pending add jobs (read your writes)
    search_wait_s: float = Field(default=30.0, ge=0)


class LifecycleConfig(BaseModel):
    """How a new memory is weighed against its stored neighbours (see operation/lifecycle)."""

    model_config = ConfigDict(extra="forbid")

    neighbours: int = Field(default=5, ge=1, le=100)
    skip_similarity: float = Field(default=0.95, gt=0, le=1)  # a duplicate
    update_similarity: float = Field(default=0.85, gt=0, le=1)  # the same, with more detail
    conflict_similarity: float = Field(default=0.6, gt=0, le=1)  # opposite polarity: supersede
    # expiry: items of these kinds expire (expires_at set at add) after so many days
    ttl_days: dict[str, int] = Field(default_factory=dict)
    # archival: active items not accessed (or added) for this many days are archived by expire()
    archive_after_days: int | None = Field(default=None, ge=1)


class SchedulerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # working memory per session, filled ahead of the questions (mnemic/operation/scheduler)
    enabled: bool = True
    # none: the turns as heard; recency: past search results (LRU); predict: next-scene
    # prediction preloads after every add to a session
    policy: Literal["none", "recency", "predict"] = "predict"
    capacity: int = Field(default=20, ge=1, le=10_000)  # items per session
    keep_results: bool = True  # also keep search results handed out (any policy)
    max_sessions: int = Field(default=1_000, ge=1)  # working memories kept, LRU
    # next-scene prediction: the last `window` turns of the session, a turn `half_life`
    # turns older weighing half; the scene vector moved `drift` along the talk's direction
    window: int = Field(default=40, ge=1, le=500)  # turns heard that stay candidates (or W)
    heard_half_life: float = Field(default=20.0, gt=0)  # ranks heard turns: salience x age
    heard_weight: float = Field(default=8.0, ge=0)  # vs 1 for each store search list
    scene_turns: int = Field(default=8, ge=1, le=200)  # the scene: the last turns
    half_life: float = Field(default=2.0, gt=0)
    drift: float = Field(default=0.5, ge=0)
    scene_words: int = Field(default=12, ge=0, le=100)  # words of the full-text query
    depth: int = Field(default=30, ge=1, le=1_000)  # per search list
    rrf_k: int = Field(default=10, ge=1)


class CubeConfig(BaseModel):
    """MemCube files and composition (operation/cube_store.py, cube_compose.py)."""

    model_config = ConfigDict(extra="forbid")

    # compose: an item of the cube merged in is a duplicate of an active item of the target
    # with the same normalised text, speaker and valid time, or a vector this similar
    # (cosine) from the same speaker; the lifecycle's skip threshold
    duplicate_similarity: float = Field(default=0.95, gt=0, le=1)


class OrganizerConfig(BaseModel):
    """The memory tree and graph (mnemic/operation/organizer): when it runs and its bounds."""

    model_config = ConfigDict(extra="forbid")

    # background policy: after an add, an organize job is queued once this many active items
    # of the scope wait outside the tree (0: only on demand, `mnemic reorganize`), and at
    # least `growth` times the items already placed: a pass reads the whole scope, so passes
    # grow apart as the scope grows and their total work stays linear in its size
    every_adds: int = Field(default=20, ge=0)
    growth: float = Field(default=0.1, ge=0, le=10)
    # insertion: an item joins the topic whose centroid is closest if the cosine reaches
    # topic_similarity, else it opens a topic of its own
    topic_similarity: float = Field(default=0.5, ge=-1, le=1)
    # a topic holding more items than this is split in two (2-means on its items' vectors)
    max_topic_size: int = Field(default=40, ge=2)
    # two topics whose centroids are this close merge, if the result fits max_topic_size
    topic_merge_similarity: float = Field(default=0.85, ge=-1, le=1)
    # near-duplicate items: same kind and speaker, cosine at least this; the later one is
    # merged into the earlier (status merged, both in history). Raw turns and documents are
    # records of what was said and are never merged
    duplicate_similarity: float = Field(default=0.95, gt=0, le=1)
    merge_kinds: list[str] = Field(
        default_factory=lambda: ["fact", "event", "preference", "procedure", "summary"]
    )
    # graph: an entity named by more than this many items is too common to link by
    entity_max_items: int = Field(default=30, ge=2)
    # graph: same-entity edges from an item to at most this many items of other sessions
    entity_links: int = Field(default=3, ge=0, le=100)
    # summaries: the items closest to a topic's centroid, quoted (no LLM) or given to the LLM
    summary_items: int = Field(default=3, ge=1, le=50)


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # `mnemic serve` and `mnemic mcp --transport http`: loopback unless told otherwise
    host: str = "127.0.0.1"
    port: int = Field(default=8750, ge=0, le=65535)
    # the admin key manages users; also MNEMIC_ADMIN_KEY. Unset: one is generated at the
    # first start, printed once, and only its hash is kept (<home>/keys.db)
    admin_key: str | None = None
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    # an uploaded cube archive (POST /v1/cubes/archive): KV caches and adapters are large
    max_archive_bytes: int = Field(default=1 << 30, ge=1024)
    # per API key: a bucket of rate_burst requests refilled at rate_limit per second
    rate_limit: float = Field(default=50.0, gt=0)
    rate_burst: int = Field(default=100, ge=1)
    # the MCP server acts as this user (also `mnemic mcp --user`)
    mcp_user: str = "default"


class Settings(BaseSettings):
    """Everything mnemic can be told. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="MNEMIC_", env_nested_delimiter="__", extra="forbid"
    )

    home: Path = Field(default_factory=default_home)
    store: StoreConfig = Field(default_factory=StoreConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    reader: ReaderConfig = Field(default_factory=ReaderConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    organizer: OrganizerConfig = Field(default_factory=OrganizerConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    cube: CubeConfig = Field(default_factory=CubeConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    max_text_chars: int = Field(default=100_000, ge=1)

    @model_validator(mode="after")
    def _postgres_queue_needs_postgres_store(self) -> Settings:
        if self.jobs.backend == "postgres" and self.store.backend != "postgres":
            raise ValueError(
                'jobs.backend = "postgres" keeps jobs in the PostgreSQL store\'s database: set '
                'store.backend = "postgres" and store.dsn, or jobs.backend = "auto"'
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # explicit arguments win over the environment, which wins over the TOML file
        return (init_settings, env_settings)

    @property
    def db_path(self) -> Path:
        return self.store.path or (self.home / "mnemic.db")


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Defaults < TOML file < ``MNEMIC_*`` env vars < keyword overrides.

    The file is ``config_file``, else ``$MNEMIC_CONFIG``, else ``<home>/config.toml`` if present.
    """
    path: Path | None = None
    if config_file is not None:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing TOML file")
    elif os.environ.get("MNEMIC_CONFIG"):
        path = Path(os.environ["MNEMIC_CONFIG"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"MNEMIC_CONFIG points to {path}, which does not exist")
    else:
        home = Path(overrides["home"]) if overrides.get("home") else default_home()
        candidate = home / "config.toml"
        path = candidate if candidate.is_file() else None

    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            file_values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc

    try:
        from_env = Settings()  # env vars over defaults
        env_set = from_env.model_dump(exclude_defaults=True)
        merged = _deep_merge(_deep_merge(file_values, env_set), overrides)
        return Settings(**merged)
    except ValidationError as exc:
        where = f" (file {path})" if path else ""
        raise ConfigError(f"invalid configuration{where}:\n{exc}") from exc


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
