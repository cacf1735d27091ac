"""LLM backends, chosen by name from :class:`mnemic.infra.llm.base.LLMConfig`."""

from __future__ import annotations

from mnemic.config import LLMConfig
from mnemic.errors import ConfigError
from mnemic.infra.llm.base import LLM, LLMOutputError, parse_json_reply

__all__ = ["LLM", "LLMConfig", "LLMOutputError", "get_llm", "parse_json_reply"]


def get_llm(config: LLMConfig) -> LLM | None:
    """The LLM the config names, or ``None`` when ``backend`` is ``"none"``."""
    if config.backend == "none":
        return None
    if config.backend == "openai":
        from mnemic.infra.llm.openai_compat import OpenAICompatLLM

        return OpenAICompatLLM.from_config(config)
    if config.backend == "hf":
        from mnemic.infra.llm.hf import HFLLM

        return HFLLM.from_config(config)
    raise ConfigError(f"unknown llm backend {config.backend!r}; use none, openai or hf")
