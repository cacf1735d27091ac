"""Prompts live in files next to this module, one per task, each with a version.

A prompt file starts with a header block::

    ---
    name: extract
    version: 2
    ---
    <the prompt text>

The version goes into every item's metadata and history reason, so what a prompt produced
can be found (and re-run) after the prompt changes.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

from mnemic.errors import ConfigError

_HEADER = re.compile(r"\A---\s*\n(?P<head>.*?)\n---\s*\n(?P<body>.*)\Z", re.DOTALL)


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    text: str


@functools.cache
def load_prompt(name: str) -> Prompt:
    """The prompt ``<name>.md`` of this package."""
    try:
        raw = resources.files(__package__).joinpath(f"{name}.md").read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"no prompt named {name!r} in {__package__}") from exc
    m = _HEADER.match(raw)
    if m is None:
        raise ConfigError(f"prompt {name!r} lacks its '---' header with name and version")
    head = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition(":") for line in m.group("head").splitlines())
        if k.strip()
    )
    try:
        version = int(head["version"])
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"prompt {name!r} needs an integer 'version:' header") from exc
    return Prompt(head.get("name", name), version, m.group("body").strip())
