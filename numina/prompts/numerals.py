"""Numerals: which words of a prompt state a count, and the count they state.

The counting method needs the number the user wrote next to each object ("three cats" -> 3). This module
holds the numeral table and a small grammar for numeral phrases over lower-cased words; it knows nothing
about tokenizers or nouns. It may import only the standard library and `numina.prompts.words`.

Table (every entry is one count; a phrase of several words carries one count):

    a, an                      1   (articles: a numeral only where they quantify a noun, see targets.py)
    zero .. nineteen           0 .. 19
    twenty .. ninety           20 .. 90, plus a unit: "twenty-one", "twenty one" -> 21
    digits                     "3", "12", "1,000" -> 3, 12, 1000 (not "2.5": no count)
    single, lone, sole         1   ("a single", "a lone", "one single" -> 1)
    both, twin                 2
    pair of, couple of         2 x the number before ("a pair of" -> 2, "two pairs of" -> 4);
                               "couple"/"pair" without "of" is a noun ("a couple walking")
    trio of                    3 x the number before
    dozen [of]                 12 x the number before ("a dozen" -> 12, "two dozen" -> 24);
                               "half a dozen" -> 6

Ordinals ("first", "second") and vague quantities ("several", "many", "hundreds of") are not counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from numina.prompts.words import split_words

ARTICLES = frozenset({"a", "an"})
_DIGITS = re.compile(r"[0-9]+|[0-9]{1,3}(?:,[0-9]{3})+")
_UNIT_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
)
_TENS_WORDS = "twenty thirty forty fifty sixty seventy eighty ninety"
UNITS = {word: value for value, word in enumerate(_UNIT_WORDS.split(" "))}
TENS = {word: 10 * (value + 2) for value, word in enumerate(_TENS_WORDS.split(" "))}
ONE_WORDS = frozenset({"single", "lone", "sole"})
TWO_WORDS = frozenset({"both", "twin"})
# Group words multiply the number before them; the flag says whether "of" must follow ("a pair of shoes").
GROUP_WORDS = {
    "pair": (2, True),
    "pairs": (2, True),
    "couple": (2, True),
    "trio": (3, True),
    "dozen": (12, False),
}

NUMERAL_WORDS = frozenset(
    {*ARTICLES, *UNITS, *TENS, *ONE_WORDS, *TWO_WORDS, *GROUP_WORDS}
)  # words that can start or continue a numeral phrase (digits aside)


@dataclass(frozen=True)
class NumeralPhrase:
    """A numeral phrase over word indices [start, stop) with its count.

    `article` is True for a bare "a"/"an", whose reading as a count depends on context.
    """

    start: int
    stop: int
    count: int
    article: bool = False

    @property
    def indices(self) -> range:
        return range(self.start, self.stop)


def _base(words: list[str], breaks: list[bool], i: int) -> tuple[int, int, bool] | None:
    """The plain number starting at word i: (value, next index, is_article), or None."""
    word = words[i]
    if word in ARTICLES:
        return 1, i + 1, True
    if _DIGITS.fullmatch(word):
        return int(word.replace(",", "")), i + 1, False
    if word in UNITS:
        return UNITS[word], i + 1, False
    if word in TENS:
        j = i + 1
        if j < len(words) and not breaks[j] and 1 <= UNITS.get(words[j], 0) <= 9:
            return TENS[word] + UNITS[words[j]], j + 1, False
        return TENS[word], j, False
    return None


def _group(words: list[str], breaks: list[bool], j: int) -> tuple[int, int] | None:
    """A group word at j ("pair of", "dozen"): (multiplier, next index), or None."""
    if j >= len(words) or breaks[j] or words[j] not in GROUP_WORDS:
        return None
    multiplier, needs_of = GROUP_WORDS[words[j]]
    k = j + 1
    has_of = k < len(words) and not breaks[k] and words[k] == "of"
    if needs_of and not has_of:
        return None
    return multiplier, k + 1 if has_of else k


def match_numeral(words: list[str], breaks: list[bool], i: int) -> NumeralPhrase | None:
    """The longest numeral phrase starting at word i (lower-cased words), or None.

    `breaks[k]` is True when punctuation separates word k from word k-1; a phrase never crosses one.
    """
    word = words[i]
    if word == "half" and words[i + 1 : i + 3] == ["a", "dozen"] and not any(breaks[i + 1 : i + 3]):
        return NumeralPhrase(i, i + 3, 6)
    if word in ONE_WORDS:
        return NumeralPhrase(i, i + 1, 1)
    if word in TWO_WORDS:
        return NumeralPhrase(i, i + 1, 2)
    group = _group(words, breaks, i)
    if group is not None:  # "pair of shoes", "dozen eggs"
        return NumeralPhrase(i, group[1], group[0])
    base = _base(words, breaks, i)
    if base is None:
        return None
    value, j, article = base
    group = _group(words, breaks, j)
    if group is not None:
        return NumeralPhrase(i, group[1], value * group[0])
    if (article or word == "one") and j < len(words) and not breaks[j] and words[j] in ONE_WORDS:
        return NumeralPhrase(i, j + 1, 1)  # "a single", "one lone"
    return NumeralPhrase(i, j, value, article=article)


def find_numerals(words: list[str], breaks: list[bool]) -> list[NumeralPhrase]:
    """All numeral phrases of a word sequence, left to right, longest match first, not overlapping."""
    phrases: list[NumeralPhrase] = []
    i = 0
    while i < len(words):
        phrase = match_numeral(words, breaks, i)
        if phrase is None:
            i += 1
        else:
            phrases.append(phrase)
            i = phrase.stop
    return phrases


def parse_numeral(text: str) -> int | None:
    """The count a numeral phrase states ("three" -> 3, "a pair of" -> 2, "12" -> 12), else None.

    The whole text must be one numeral phrase. "a"/"an" parse to 1; whether an article in a prompt is a
    count depends on the noun it quantifies (see `numina.prompts.targets`).
    """
    spans = split_words(text)
    if not spans:
        return None
    words = [span.text.lower() for span in spans]
    breaks = [span.break_before for span in spans]
    phrase = match_numeral(words, breaks, 0)
    if phrase is None or phrase.stop != len(words):
        return None
    return phrase.count
