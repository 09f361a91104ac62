"""Random strings that match a contract's regex, for the generic generator.

Contract regexes are RE2 (DuckDB's ``regexp_matches``); the syntax contracts use (classes, ranges,
repeats, groups, alternation, anchors) reads the same to Python's own regex parser, so its parse
tree is walked here to build a matching string. No library is used because the one that does this
walk, ``rstr`` (3.2.2, measured), does not fit: it draws one string at a time, character by character
in pure Python, 130-200 times slower than this module (5,000 UUIDs: about 2 s against 13 ms), a cost
paid per event for unique keys; its ``*`` and ``+`` repeat up to 100 times (a module constant), so a
firmware version of three ``+`` repeats averages 150 characters and overruns ``max_length``; and its
alphabet of non-word characters is built in set order, which changes with PYTHONHASHSEED, so one seed
gives other strings in another process.

Unbounded repeats are capped and look-arounds are ignored, a back-reference repeats its group's last
text: the generic generator checks every event against the contract anyway, so a rare miss costs a
discarded candidate, never a bad event. Strings are built ``n`` at a time, one NumPy draw per regex
item, so that a unique id per event stays cheap.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from itertools import groupby

# Python's regex parser, private but stable since 3.11; the deprecated public alias warns on import.
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]

import numpy as np

Rng = np.random.Generator
Groups = dict[int, np.ndarray]
Emit = Callable[[Rng, int, Groups], np.ndarray]
"""Draws ``n`` texts (an object array of ``str``) for one part of a regex."""

_PRINTABLE = string.ascii_letters + string.digits + "-_. "
_CATEGORIES = {
    sre_constants.CATEGORY_DIGIT: string.digits,
    sre_constants.CATEGORY_NOT_DIGIT: string.ascii_letters + "-_. ",
    sre_constants.CATEGORY_SPACE: " ",
    sre_constants.CATEGORY_NOT_SPACE: string.ascii_letters + string.digits + "-_.",
    sre_constants.CATEGORY_WORD: string.ascii_letters + string.digits + "_",
    sre_constants.CATEGORY_NOT_WORD: "-. ",
}
_WIDEST_RANGE = 256  # characters taken from one range such as [\x00-\U0010ffff]


class RegexSampler:
    """Draws strings matching ``pattern``; unbounded repeats (``*``, ``+``, ``{n,}``) add at most ``spread``."""

    def __init__(self, pattern: str, spread: int = 4) -> None:
        self.pattern = pattern
        self._spread = spread
        try:
            tree = sre_parser.parse(pattern)
        except re.error as exc:  # RE2 syntax Python does not read, such as \pL or a late (?i)
            raise ValueError(f"regex {pattern!r}: {exc}") from exc
        self._emit = self._sequence(list(tree))

    def sample(self, rng: Rng, n: int, max_length: int | None = None, tries: int = 8) -> list[str]:
        """``n`` matching strings; one longer than ``max_length`` is drawn again, up to ``tries`` times."""
        texts = self._emit(rng, n, {})
        for _ in range(tries if max_length is not None else 0):
            too_long = np.flatnonzero(np.fromiter(map(len, texts), dtype=np.int64, count=n) > max_length)
            if not len(too_long):
                break
            texts[too_long] = self._emit(rng, len(too_long), {})
        return texts.tolist()

    def _sequence(self, items: list[tuple[object, object]]) -> Emit:
        parts: list[Emit] = []
        for is_literal, run in groupby(items, key=lambda item: item[0] is sre_constants.LITERAL):
            if is_literal:  # consecutive literal characters are one constant text
                parts.append(_constant("".join(chr(value) for _, value in run)))  # type: ignore[arg-type]
            else:
                parts.extend(self._node(op, value) for op, value in run)
        if not parts:
            return _constant("")

        def emit(rng: Rng, n: int, groups: Groups) -> np.ndarray:
            texts = parts[0](rng, n, groups)
            for part in parts[1:]:
                texts = texts + part(rng, n, groups)
            return texts

        return emit

    def _node(self, op: object, value: object) -> Emit:  # noqa: PLR0911 - one branch per regex construct
        c = sre_constants
        if op in (c.NOT_LITERAL, c.ANY):
            excluded = {chr(value)} if op is c.NOT_LITERAL else {"\n"}  # type: ignore[arg-type]
            return _choice("".join(ch for ch in _PRINTABLE if ch not in excluded))
        if op is c.IN:
            return _choice(_class_members(value))  # type: ignore[arg-type]
        if op is c.CATEGORY:
            return _choice(_CATEGORIES[value])
        if op is c.BRANCH:
            return _branches([self._sequence(list(branch)) for branch in value[1]])  # type: ignore[index]
        if op is c.SUBPATTERN:
            group, _, _, inner = value  # type: ignore[misc]
            body = self._sequence(list(inner))
            return _remembered(group, body) if group is not None else body
        if op is c.ATOMIC_GROUP:
            return self._sequence(list(value))  # type: ignore[call-overload]
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            low, high, inner = value  # type: ignore[misc]
            return _repeat(self._sequence(list(inner)), low, min(high, low + self._spread))
        if op is c.GROUPREF:
            return lambda rng, n, groups: groups.get(value, _texts(n, ""))  # type: ignore[arg-type]
        if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            return _constant("")
        raise ValueError(f"regex {self.pattern!r}: cannot generate strings for {op}")


def _texts(n: int, text: str) -> np.ndarray:
    return np.full(n, text, dtype=object)


def _constant(text: str) -> Emit:
    return lambda rng, n, groups: _texts(n, text)


def _choice(chars: str) -> Emit:
    if not chars:
        raise ValueError("a character class that no printable character matches")
    pool = np.array(list(chars), dtype=object)
    return lambda rng, n, groups: pool[rng.integers(len(pool), size=n)]


def _branches(branches: list[Emit]) -> Emit:
    """``a|b|c``: every branch is drawn for every row and one kept, so group texts stay row-aligned."""

    def emit(rng: Rng, n: int, groups: Groups) -> np.ndarray:
        chosen = rng.integers(len(branches), size=n)
        texts = _texts(n, "")
        for index, branch in enumerate(branches):
            texts = np.where(chosen == index, branch(rng, n, groups), texts)
        return texts

    return emit


def _repeat(body: Emit, low: int, high: int) -> Emit:
    def emit(rng: Rng, n: int, groups: Groups) -> np.ndarray:
        counts = rng.integers(low, high, size=n, endpoint=True)
        texts = _texts(n, "")
        for done in range(high):
            texts = texts + np.where(counts > done, body(rng, n, groups), "")
        return texts

    return emit


def _remembered(group: int, body: Emit) -> Emit:
    """A capturing group: its texts are kept for back-references."""

    def emit(rng: Rng, n: int, groups: Groups) -> np.ndarray:
        groups[group] = texts = body(rng, n, groups)
        return texts

    return emit


def _class_members(items: list[tuple[object, object]]) -> str:
    """The characters a ``[...]`` class offers: its own, or for ``[^...]`` the printable ones it leaves."""
    c = sre_constants
    members: list[str] = []
    negated = False
    for op, value in items:
        if op is c.NEGATE:
            negated = True
        elif op is c.LITERAL:
            members.append(chr(value))  # type: ignore[arg-type]
        elif op is c.RANGE:
            low, high = value  # type: ignore[misc]
            members.extend(chr(code) for code in range(low, min(high, low + _WIDEST_RANGE - 1) + 1))
        elif op is c.CATEGORY:
            members.extend(_CATEGORIES[value])
        else:
            raise ValueError(f"cannot generate strings for {op} in a character class")
    if negated:
        chosen = set(members)
        return "".join(ch for ch in _PRINTABLE if ch not in chosen)
    return "".join(dict.fromkeys(members))
