"""LLM on a local HuggingFace transformers causal model (a folder or a hub name in the local
cache; nothing is downloaded when ``HF_HUB_OFFLINE=1``). Needs the ``torch`` extra.

The model loads on first use. Prompts go through the tokenizer's chat template when it has
one, else through a plain ``role: text`` transcript. :meth:`HFLLM.complete_json` puts the
JSON schema in a system message, reads the reply with :func:`parse_json_reply` (which repairs
the usual breakage) and re-asks with the error quoted, like the HTTP client. Generation is
serialised by a lock: one model, one generation at a time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from mnemic.config import LLMConfig
from mnemic.errors import BackendUnavailable, ConfigError
from mnemic.infra.llm.base import LLMOutputError, M, parse_json_reply


class HFLLM:
    def __init__(self, model: str, *, device: str = "cpu", max_new_tokens: int = 512) -> None:
        self.model_name = model
        self.device = device
        self.max_new_tokens = max_new_tokens
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: LLMConfig) -> HFLLM:
        return cls(config.model, device=config.device, max_new_tokens=config.max_new_tokens)

    @property
    def id(self) -> str:
        return f"hf:{self.model_name}"

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            try:
                from transformers import AutoModelForCausalLM, AutoTokenizer
            except ImportError as exc:
                raise ConfigError(
                    "llm.backend = 'hf' needs transformers and torch: pip install 'mnemic[torch]'"
                ) from exc
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.model_name)
                model: Any = AutoModelForCausalLM.from_pretrained(self.model_name)
            except (OSError, ValueError) as exc:
                raise BackendUnavailable(
                    f"cannot load the HF model {self.model_name!r}: {exc}; give a local folder "
                    "or a model in the HuggingFace cache"
                ) from exc
            model.to(self.device).eval()
            self._tokenizer, self._model = tokenizer, model
        return self._tokenizer, self._model

    def _prompt(self, messages: list[dict[str, str]]) -> str:
        tokenizer, _ = self._load()
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            return str(text)
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join([*lines, "assistant:"])

    def _inputs(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        tokenizer, _ = self._load()
        encoded = tokenizer(self._prompt(messages), return_tensors="pt")
        return {k: v.to(self.device) for k, v in encoded.items() if k != "token_type_ids"}

    def _generate_kwargs(self, temperature: float, max_tokens: int | None) -> dict[str, Any]:
        tokenizer, _ = self._load()
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_tokens or self.max_new_tokens,
            "do_sample": temperature > 0,
            "pad_token_id": tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else tokenizer.eos_token_id,
        }
        if temperature > 0:
            kwargs["temperature"] = temperature
        return kwargs

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> str:
        tokenizer, model = self._load()
        import torch

        inputs = self._inputs(messages)
        with self._lock, torch.no_grad():
            output = model.generate(**inputs, **self._generate_kwargs(temperature, max_tokens))
        new = output[0, inputs["input_ids"].shape[1] :]
        return str(tokenizer.decode(new, skip_special_tokens=True))

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> Iterator[str]:
        """The reply's text pieces as they are generated."""
        tokenizer, model = self._load()
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = {
            **self._inputs(messages),
            **self._generate_kwargs(temperature, max_tokens),
            "streamer": streamer,
        }
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock:
                    model.generate(**kwargs)
            except BaseException as exc:  # surfaced to the reader below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        for piece in streamer:
            if piece:
                yield piece
        thread.join()
        if errors:
            raise BackendUnavailable(f"generation failed: {errors[0]}") from errors[0]

    def complete_json(
        self, messages: list[dict[str, str]], schema: type[M], *, retries: int = 2
    ) -> M:
        instruction = "Answer with JSON only, matching this JSON schema:\n" + json.dumps(
            schema.model_json_schema()
        )
        conversation = [{"role": "system", "content": instruction}, *messages]
        error: LLMOutputError | None = None
        for _ in range(retries + 1):
            reply = self.complete(conversation)
            try:
                return parse_json_reply(reply, schema)
            except LLMOutputError as exc:
                error = exc
            conversation = [
                *conversation,
                {"role": "assistant", "content": reply},
                {
                    "role": "user",
                    "content": f"Your previous reply was not valid: {error.error}. "
                    "Reply with JSON only.",
                },
            ]
        assert error is not None
        raise error
