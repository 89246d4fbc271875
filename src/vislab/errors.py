"""The one error type a user can act on.

Anything raised as `VislabError` is a problem with the user's input (a config typo, a missing
or corrupt file, a checkpoint that does not fit). The CLI prints its message as one line and
exits with status 2; tracebacks are for bugs, and shown only with `--debug`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VislabError(Exception):
    """A problem the user can fix; the message says what to do."""


def close_matches(word: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """The candidates closest to `word`, best first (for 'did you mean' hints)."""
    candidates = list(candidates)
    matches = difflib.get_close_matches(word, candidates, n=n, cutoff=0.5)
    if not matches:  # fall back to shared prefixes, e.g. 'Q1' -> 'Q1_1', 'Q1_2', ...
        matches = [c for c in candidates if c.lower().startswith(word.lower()[:2])][:n]
    return matches


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """'; did you mean: a, b?' or '' when nothing is close."""
    matches = close_matches(word, candidates)
    return f"; did you mean: {', '.join(matches)}?" if matches else ""
