"""Words of a prompt: how the cleaned prompt text is cut into words with character spans.

Every other module of `numina.prompts` works on these words, so the definition lives in one place. It may
import only the standard library.

Rules:
- A word is a run of letters and digits, with inner apostrophes kept ("don't"); a number keeps its
  separators ("1,000", "2.5"). A possessive "'s" is a
  word of its own, so "patient's" gives "patient" and "'s" (as Penn Treebank tokenisation does).
- Hyphens separate words: "debris-pieces" is "debris" and "pieces", "twenty-one" is "twenty" and "one".
  Words joined by a hyphen or by whitespace belong to one phrase; any other character between two words
  (comma, full stop, colon, ...) is a phrase break.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:['\u2019][^\W_]+)*")
_POSSESSIVE = re.compile(r"['\u2019][sS]$")
_JOINERS = frozenset("-\u2010\u2011")  # hyphen, Unicode hyphen, non-breaking hyphen


@dataclass(frozen=True)
class WordSpan:
    """One word: its text, its character span [start, end) in the text, and how it joins the word before.

    `break_before` is True for the first word and after punctuation; `hyphen_before` after a hyphen.
    """

    text: str
    start: int
    end: int
    break_before: bool
    hyphen_before: bool


def split_words(text: str) -> list[WordSpan]:
    """Cut text into words (see the module docstring for the rules)."""
    pieces: list[tuple[int, int]] = []
    for match in _WORD.finditer(text):
        start, end = match.span()
        possessive = _POSSESSIVE.search(match.group())
        if possessive and end - start > 2:
            pieces += [(start, end - 2), (end - 2, end)]
        else:
            pieces.append((start, end))
    words: list[WordSpan] = []
    previous_end = None
    for start, end in pieces:
        if previous_end is None:
            brk, hyphen = True, False
        else:
            gap = text[previous_end:start].strip()
            hyphen = len(gap) == 1 and gap in _JOINERS
            brk = bool(gap) and not hyphen
        words.append(WordSpan(text[start:end], start, end, brk, hyphen))
        previous_end = end
    return words
