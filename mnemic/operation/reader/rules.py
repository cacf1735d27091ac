"""Memories extracted from raw turns by rules, without an LLM.

Three kinds of cues, each giving a derived item with provenance to its turn:

- **slots**: first-person statements of a single-valued attribute — where one lives, works,
  what one does for a living, a favourite thing, relationship status, diet, age, name,
  contact details — become facts such as "Ana lives in Paris", tagged ``slot:residence``
  with the value in metadata, so the lifecycle can tell a change ("I moved to Paris") from a
  repetition. Explicit change words ("moved to", "new job", "now", "switched to") are kept
  as the ``cue`` that justifies superseding the old value.
- **preferences**: "I love / enjoy / prefer / hate X", "I don't like X anymore": a
  preference item per object, with its polarity, so "I don't like sushi anymore" supersedes
  "I love sushi".
- **events**: first-person sentences with a time expression become event items dated when
  the event happened ("yesterday" said on 8 May 2023 → valid from 7 May 2023), with the
  absolute date written into their text.

Entities (capitalised names that do not start a sentence) are collected for every item.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from mnemic.infra.text import STOPWORDS
from mnemic.models import MemoryItem, MemoryKind, Source
from mnemic.operation.reader.dates import human, resolve_dates

DERIVED_TAG = "derived"  # on every extracted memory, so lifecycle compares like with like
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_FIRST_PERSON = re.compile(r"\b(?:I|I'm|I've|I'd|I'll|me|my|we|we're|we've|our)\b", re.I)
_STOP_CAPS = {
    "I",
    "I'm",
    "I've",
    "I'd",
    "I'll",
    "The",
    "A",
    "An",
    "And",
    "But",
    "So",
    "Oh",
    "Hey",
    "Hi",
    "Wow",
    "Yes",
    "No",
    "OK",
    "Thanks",
    "Thank",
}
# names of days and months, whole words only ("Mar" and "March", never "Maria")
_WEEK_MONTH = re.compile(
    r"(?:(?:Mon|Tues?|Wed(?:nes)?|Thu(?:rs)?|Fri|Sat(?:ur)?|Sun)(?:day)?|Jan(?:uary)?"
    r"|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?"
    r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_CAPS = re.compile(r"\b[A-Z][\w'&-]*(?:\s+(?:of\s+|de\s+)?[A-Z][\w'&-]*)*")

# where a value ends: punctuation, a conjunction or clause, or the end of the sentence
_END = (
    r"(?=\s*(?:[,.;:!?()]|\s-\s|\band\b|\bbut\b|\bbecause\b|\bsince\b|\bwhere\b|\bwhich\b"
    r"|\bwith\b|\bnow\b|\bfor\b|\bat the\b|\bafter\b|\bbefore\b|\bwhen\b|\bso\b|\bas\b"
    r"|\blast\b|\bnext\b|\bthis\b|\byesterday\b|\btoday\b|\btonight\b|\brecently\b|\bon\b"
    r"|\bin\s+(?:\d|a\b|an\b|one\b|two\b|three\b|the\s+(?:summer|spring|fall|winter)"
    r"|(?:january|february|march|april|may|june|july|august|september|october|november"
    r"|december|spring|summer|autumn|fall|winter)\b)"
    r"|\b(?:a|one|two|three|four|five|six|\d+)\s+(?:days?|weeks?|months?|years?)\s+ago\b|$))"
)
_VALUE = r"(?P<value>[\w'&.-]+(?:\s+[\w'&.-]+){0,5}?)" + _END


@dataclass(frozen=True)
class SlotRule:
    slot: str
    pattern: re.Pattern[str]
    template: str  # "{subject} lives in {value}"
    kind: MemoryKind = MemoryKind.FACT


def _rule(slot: str, pattern: str, template: str, kind: MemoryKind = MemoryKind.FACT) -> SlotRule:
    return SlotRule(slot, re.compile(pattern, re.I), template, kind)


_CHANGE = (
    r"(?P<cue>moved|relocated|have moved|'ve moved|just moved|finally moved|now live|now living"
    r"|switched|changed|started|got a new|new job|now work|now working|now|these days"
    r"|anymore|no longer|became|turned|got)"
)

# first person only: what a speaker says about themselves
SLOT_RULES: tuple[SlotRule, ...] = (
    _rule(
        "residence",
        r"\bI(?:'ve| have)?\s+(?:just\s+|finally\s+|recently\s+)?(?P<cue>moved|relocated)\s+"
        rf"(?:back\s+)?to\s+(?:the\s+)?{_VALUE}",
        "{subject} lives in {value}",
    ),
    _rule(
        "residence",
        r"\bI(?:'m| am)?\s+(?P<cue>now\s+)?(?:live|living|based|staying)\s+in\s+(?:the\s+)?"
        + _VALUE,
        "{subject} lives in {value}",
    ),
    _rule(
        "residence",
        r"\bI\s+(?P<cue>now\s+)?live\s+in\s+(?:the\s+)?" + _VALUE,
        "{subject} lives in {value}",
    ),
    _rule(
        "employer",
        r"\bI\s+(?:(?P<cue>now|just\s+started|started)\s+)?(?:work|working|to\s+work)\s+"
        rf"(?:at|for)\s+{_VALUE}",
        "{subject} works at {value}",
    ),
    _rule(
        "employer",
        r"\bI(?:'m| am)\s+(?P<cue>now\s+)?working\s+(?:at|for)\s+" + _VALUE,
        "{subject} works at {value}",
    ),
    _rule(
        "employer",
        r"\bI\s+(?:just\s+)?(?:got|started|accepted|took)\s+a\s+(?P<cue>new\s+)?job\s+"
        rf"(?:at|with)\s+{_VALUE}",
        "{subject} works at {value}",
    ),
    _rule(
        "employer",
        r"\bI\s+(?:just\s+)?(?P<cue>joined)\s+(?:the\s+)?(?P<value>(?-i:[A-Z][\w&'-]*(?:\s+[A-Z][\w&'-]*)*))"
        r"\s+as\b",
        "{subject} works at {value}",
    ),
    _rule(
        "occupation",
        r"\bI\s+(?:(?P<cue>now)\s+)?work\s+as\s+(?:an?\s+)?" + _VALUE,
        "{subject} works as {value}",
    ),
    _rule(
        "occupation",
        r"\bI(?:'ve| have)?\s+(?P<cue>became|become)\s+an?\s+" + _VALUE,
        "{subject} works as {value}",
    ),
    _rule(
        "occupation",
        r"\bI(?:'m| am)\s+(?P<cue>now\s+)?an?\s+(?P<value>(?:[\w-]+\s+){0,2}?"
        r"(?:teacher|nurse|doctor|engineer|developer|programmer|designer|lawyer|accountant"
        r"|chef|student|writer|artist|manager|consultant|scientist|researcher|pilot"
        r"|architect|musician|photographer|counselor|therapist|firefighter|mechanic"
        r"|electrician|pharmacist|dentist|journalist|analyst|professor|librarian))\b",
        "{subject} works as {value}",
    ),
    _rule(
        "favorite_{thing}",
        r"\bmy\s+(?:new\s+)?(?:favou?rite|fave)\s+(?P<thing>[a-z]+(?:\s+[a-z]+)?)\s+is\s+"
        rf"(?P<cue>now\s+)?{_VALUE}",
        "{subject}'s favorite {thing} is {value}",
        MemoryKind.PREFERENCE,
    ),
    _rule(
        "relationship",
        r"\bI(?:'m| am| got| just got| have been| 've been)\s+(?P<cue>now\s+)?"
        r"(?P<value>married|engaged|divorced|single|separated|widowed)\b",
        "{subject} is {value}",
    ),
    _rule(
        "diet",
        r"\bI(?:'m| am|'ve| have)?\s+(?:(?P<cue>now|became|become|gone|went|turned)\s+)?"
        r"(?:an?\s+)?(?P<value>vegetarian|vegan|pescatarian)\b",
        "{subject} is {value}",
    ),
    _rule(
        "age",
        r"\bI(?:'m| am| just| recently)?\s+(?:(?P<cue>turned)\s+)?(?P<value>\d{1,3})"
        r"(?:\s+years?\s+old)?\b(?=\s+(?:years|today|this|last|yesterday)|[.!,]|$)",
        "{subject} is {value} years old",
    ),
    _rule(
        "name",
        r"\b(?:my\s+name\s+is|call\s+me)\s+(?P<value>(?-i:[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)?))",
        "{subject}'s name is {value}",
    ),
    _rule(
        "{thing}",
        r"\bmy\s+(?P<cue>new\s+)?(?P<thing>phone\s+number|email(?:\s+address)?|address"
        r"|username|car|dog's\s+name|cat's\s+name|partner's\s+name)\s+is\s+"
        r"(?P<value>[^\s,;!?]+(?:\s+[^\s,;!?]+){0,5}?)(?=[,;!?]|\.(?:\s|$)|$)",
        "{subject}'s {thing} is {value}",
    ),
)

_PREFERENCE = re.compile(
    r"\bI\s+(?:(?P<neg>don't|do not|no longer|never|can't|cannot)\s+)?(?:really\s+|just\s+|"
    r"absolutely\s+|totally\s+|still\s+)?(?P<verb>love|like|enjoy|adore|prefer|hate|dislike"
    r"|detest|stand)\s+(?P<object>(?:to\s+)?[\w'-]+(?:\s+[\w'-]+){0,3}?)"
    r"(?P<anymore>\s+any\s?more)?(?=[,.;!?]|\s+(?:and|but|because|so|since|with|when|now)\b|$)",
    re.I,
)
_NEGATIVE_VERBS = {"hate", "dislike", "detest"}
_OBJECT_STOP = {"it", "that", "this", "them", "you", "him", "her", "those", "these", "to"}


@dataclass(frozen=True)
class Cue:
    slot: str
    value: str
    cue: str | None


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def entities(text: str) -> list[str]:
    """Capitalised names that are not just the first word of a sentence."""
    found: list[str] = []
    for sentence in sentences(text):
        for m in _CAPS.finditer(sentence):
            words = m.group(0).split()
            if m.start() == 0:
                if len(words) == 1:
                    continue  # capitalised only because it starts the sentence
                if words[0].lower() in STOPWORDS:
                    words = words[1:]  # "Then Maria called" names Maria
            if words[0] in _STOP_CAPS or _WEEK_MONTH.fullmatch(words[0]):
                continue
            found.append(" ".join(words))
    return list(dict.fromkeys(found))


def _clean_value(value: str) -> str:
    value = value.strip().strip("\"'")
    value = re.sub(r"^(?:the|a|an)\s+", "", value, flags=re.I) if len(value.split()) > 1 else value
    return value.rstrip(".")


def slot_cues(sentence: str) -> list[Cue]:
    out: list[Cue] = []
    seen: set[str] = set()
    for rule in SLOT_RULES:
        for m in rule.pattern.finditer(sentence):
            groups = m.groupdict()
            thing = (groups.get("thing") or "").lower().replace(" ", "_").replace("'", "")
            thing = {"email_address": "email", "colour": "color"}.get(thing, thing)
            slot = rule.slot.format(thing=thing)
            if slot in seen:
                continue
            value = _clean_value(m.group("value"))
            if not value or value.lower() in _OBJECT_STOP:
                continue
            seen.add(slot)
            cue = (groups.get("cue") or "").strip() or None
            out.append(Cue(slot, value, cue))
    return out


def _template(slot: str) -> SlotRule:
    for rule in SLOT_RULES:
        if rule.slot == slot or ("{" in rule.slot and _slot_family(rule.slot, slot)):
            return rule
    raise KeyError(slot)


def _slot_family(pattern: str, slot: str) -> bool:
    prefix = pattern.split("{")[0]
    return (slot.startswith(prefix) and bool(prefix)) or pattern == "{thing}"


def normalize_value(value: str) -> str:
    return " ".join(re.findall(r"\w+", value.lower()))


class RuleExtractor:
    """Derived items (facts, preferences, events) from raw turns; see the module doc."""

    def __init__(self, *, events: bool = True) -> None:
        self.events = events

    def extract(self, turns: Iterable[MemoryItem]) -> list[MemoryItem]:
        out: list[MemoryItem] = []
        for turn in turns:
            out.extend(self._from_turn(turn))
        return out

    def _from_turn(self, turn: MemoryItem) -> list[MemoryItem]:
        if turn.kind == MemoryKind.DOCUMENT:
            return []  # whose "I" a document speaks with is unknown: no rule subject
        subject = turn.speaker or "the user"
        said = turn.valid_from or turn.recorded_at
        items: list[MemoryItem] = []
        for sentence in sentences(turn.text):
            if not _FIRST_PERSON.search(sentence):
                continue
            resolved = [r for r in resolve_dates(sentence, said) if r.start <= said.date()]
            when = datetime(*resolved[0].start.timetuple()[:3], tzinfo=UTC) if resolved else said
            for cue in slot_cues(sentence):
                rule = _template(cue.slot)
                thing = cue.slot.split("_", 1)[1] if cue.slot.startswith("favorite_") else ""
                thing = thing or cue.slot
                text = rule.template.format(
                    subject=subject, value=cue.value, thing=thing.replace("_", " ")
                )
                items.append(
                    self._item(
                        turn,
                        text,
                        rule.kind,
                        when,
                        sentence,
                        slot=cue.slot,
                        value=cue.value,
                        cue=cue.cue,
                        subject=subject,
                    )
                )
            for m in _PREFERENCE.finditer(sentence):
                obj = _clean_value(m.group("object"))
                if normalize_value(obj) in _OBJECT_STOP or not obj:
                    continue
                verb = m.group("verb").lower()
                negative = bool(m.group("neg")) != (verb in _NEGATIVE_VERBS)
                if verb == "stand" and not m.group("neg"):
                    continue  # "I stand by" is no preference
                if verb == "stand":
                    negative = True
                text = f"{subject} {'dislikes' if negative else 'likes'} {obj}"
                said_cue = (m.group("neg") or "").lower()
                if m.group("anymore"):
                    said_cue = f"{said_cue} anymore".strip()
                items.append(
                    self._item(
                        turn,
                        text,
                        MemoryKind.PREFERENCE,
                        when,
                        sentence,
                        slot=f"likes:{normalize_value(obj)}",
                        value="no" if negative else "yes",
                        cue=said_cue or None,
                        subject=subject,
                    )
                )
            if self.events and resolved and not items:
                dates = ", ".join(dict.fromkeys(r.render() for r in resolved))
                text = (
                    f"{subject}: {sentence} ({dates})" if turn.speaker else f"{sentence} ({dates})"
                )
                items.append(self._item(turn, text, MemoryKind.EVENT, when, sentence))
        return items

    def _item(
        self,
        turn: MemoryItem,
        text: str,
        kind: MemoryKind,
        when: datetime,
        sentence: str,
        *,
        slot: str | None = None,
        value: str | None = None,
        cue: str | None = None,
        subject: str | None = None,
    ) -> MemoryItem:
        metadata: dict[str, object] = {"extractor": "rules", "sentence": sentence}
        tags: list[str] = [DERIVED_TAG]
        if slot is not None:
            metadata |= {"slot": slot, "value": value, "subject": subject}
            if cue:
                metadata["cue"] = cue
            tags.append(f"slot:{slot}")
        said = turn.valid_from or turn.recorded_at
        if when.date() != said.date():
            metadata["said_on"] = human(said)
        return MemoryItem(
            user_id=turn.user_id,
            cube_id=turn.cube_id,
            session_id=turn.session_id,
            agent_id=turn.agent_id,
            text=text,
            kind=kind,
            speaker=turn.speaker,
            valid_from=when,
            source=Source(
                kind="derived", message_ids=list(turn.source.message_ids), item_ids=[turn.id]
            ),
            entities=entities(sentence),
            tags=tags,
            confidence=0.7,
            metadata=metadata,
        )
