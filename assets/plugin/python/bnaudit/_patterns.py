"""bnaudit's module-path patterns, as in ``--frozen``: ``*`` matches within one segment, ``**``
any number of segments, ``[12]`` a character class; a pattern covers a module when it matches the
module's path or any prefix of it. Pure Python: the command-line wrappers need no torch."""

from __future__ import annotations

import functools
import re
from typing import Iterable, Optional

__all__ = ["covering_prefix", "matches", "names"]


def _segment_regex(segment: str) -> str:
    """One path segment: `*` and `?` never cross a dot, `[...]` is a character class."""
    out, i = "", 0
    while i < len(segment):
        ch = segment[i]
        close = segment.find("]", i + 2) if ch == "[" else -1
        if ch == "*":
            out += "[^.]*"
        elif ch == "?":
            out += "[^.]"
        elif close != -1:
            body = segment[i + 1 : close]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
            i = close
        else:
            out += re.escape(ch)
        i += 1
    return out


@functools.lru_cache(maxsize=256)
def _pattern_regex(pattern: str) -> "re.Pattern[str]":
    segments = pattern.split(".")
    # A trailing `**` adds nothing: a pattern already covers everything under what it matches.
    while len(segments) > 1 and segments[-1] == "**":
        segments.pop()
    if segments == ["**"]:
        return re.compile(r".*\Z")
    # `**` spans zero or more whole segments, each with its dot.
    body = "".join(r"(?:[^.]+\.)*" if s == "**" else _segment_regex(s) + r"\." for s in segments)
    return re.compile(body[: -len(r"\.")] + r"\Z")


def covering_prefix(patterns: Iterable[str], name: str) -> Optional[str]:
    """The shortest module prefix of ``name`` (``name`` itself included) that one of
    ``patterns`` matches: the frozen sub-model holding the module; None when none covers it."""
    regexes = [_pattern_regex(p) for p in patterns]
    segments = name.split(".")
    for k in range(1, len(segments) + 1):
        prefix = ".".join(segments[:k])
        if any(r.match(prefix) for r in regexes):
            return prefix
    return None


def matches(pattern: str, name: str) -> bool:
    """Whether ``pattern`` covers module ``name``: it matches the path or a prefix of it."""
    return covering_prefix([pattern], name) is not None


def names(patterns: Iterable[str], name: str) -> bool:
    """Whether one of ``patterns`` matches ``name`` itself, not only a prefix of it."""
    return any(_pattern_regex(p).match(name) for p in patterns)
