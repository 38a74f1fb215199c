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
                               "couple"/"pair" without "of" is a noun ("a couple walking");
                               1 x for a thing that is itself a pair ("two pairs of sunglasses" -> 2,
                               one of PAIR_NOUNS within the next 3 words; shoes and gloves stay 2)
    trio of                    3 x the number before
    dozen [of]                 12 x the number before ("a dozen" -> 12, "two dozen" -> 24);
                               "half a dozen" -> 6
    hundred, thousand, million x the number before ("a hundred" -> 100, "two thousand" -> 2000),
                               plus a number after "hundred"/"thousand" ("a hundred and fifty" -> 150)

Ordinals ("first", "second") and vague quantities ("several", "many", "hundreds of", "a few", "a lot
of", "a handful of", "a number of", "a great many") are not counts, and their article is
no numeral either.
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

SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
# Things that are one object although named by a pair ("a pair of scissors" is one pair of scissors).
_PAIR_WORDS = (
    "sunglasses glasses spectacles goggles binoculars scissors shears pliers tongs tweezers jeans trousers "
    "pants shorts leggings tights overalls pyjamas pajamas headphones earphones earmuffs"
)
PAIR_NOUNS = frozenset(_PAIR_WORDS.split(" "))
# Words after "a"/"an" that make a vague quantity ("a few cats"), not a count of 1, with the word that
# must follow them (None: any; "a lot of", not "a parking lot"; "a great many", not "a great dane").
VAGUE_AFTER_ARTICLE: dict[str, frozenset[str] | None] = {
    "few": None,
    "lot": frozenset({"of"}),
    "lots": frozenset({"of"}),
    "handful": frozenset({"of"}),
    "number": frozenset({"of"}),
    "great": frozenset({"many", "number", "deal"}),
    "good": frozenset({"many", "few", "number", "deal"}),
}

NUMERAL_WORDS = frozenset(
    {*ARTICLES, *UNITS, *TENS, *ONE_WORDS, *TWO_WORDS, *GROUP_WORDS, *SCALES}
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


def _vague(words: list[str], breaks: list[bool], i: int) -> bool:
    """Whether the words from i, after an article, state a vague quantity ("few", "lot of")."""
    if i >= len(words) or breaks[i] or words[i] not in VAGUE_AFTER_ARTICLE:
        return False
    follow = VAGUE_AFTER_ARTICLE[words[i]]
    return follow is None or (i + 1 < len(words) and not breaks[i + 1] and words[i + 1] in follow)


def _base(words: list[str], breaks: list[bool], i: int) -> tuple[int, int, bool] | None:
    """The plain number starting at word i: (value, next index, is_article), or None."""
    word = words[i]
    if word in ARTICLES:
        if _vague(words, breaks, i + 1):
            return None  # "a few cats": a vague quantity
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


def _plain(words: list[str], breaks: list[bool], i: int) -> tuple[int, int] | None:
    """A number 1..99 written in words at i ("fifty", "twenty-one"): (value, next index), or None."""
    if i >= len(words) or breaks[i] or not (words[i] in TENS or UNITS.get(words[i], 0) >= 1):
        return None
    value, j, _ = _base(words, breaks, i)
    return value, j


def _scaled(words: list[str], breaks: list[bool], value: int, j: int) -> tuple[int, int]:
    """The number `value` ending before j times any scale words from j, plus a number after "hundred" or
    "thousand" ("a hundred and fifty"): (value, next index)."""
    while j < len(words) and not breaks[j] and words[j] in SCALES:
        value *= SCALES[words[j]]
        j += 1
        k = j + 1 if j < len(words) and not breaks[j] and words[j] == "and" else j
        rest = _plain(words, breaks, k)
        if words[j - 1] != "million" and rest is not None:
            value, j = value + rest[0], rest[1]
    return value, j


def _group(words: list[str], breaks: list[bool], j: int) -> tuple[int, int] | None:
    """A group word at j ("pair of", "dozen"): (multiplier, next index), or None. A pair of one of
    PAIR_NOUNS (within the 3 words after "of") is one thing: multiplier 1."""
    if j >= len(words) or breaks[j] or words[j] not in GROUP_WORDS:
        return None
    multiplier, needs_of = GROUP_WORDS[words[j]]
    k = j + 1
    has_of = k < len(words) and not breaks[k] and words[k] == "of"
    if needs_of and not has_of:
        return None
    if words[j] in ("pair", "pairs"):
        after = k + 1
        ahead = [w for n, w in enumerate(words[after : after + 3]) if not any(breaks[after : after + n + 1])]
        if any(w in PAIR_NOUNS for w in ahead):
            multiplier = 1
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
    if j < len(words) and not breaks[j] and words[j] in SCALES:
        value, j = _scaled(words, breaks, value, j)
        article = False
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
