"""Noun phrases after a numeral: which word a numeral counts, found without a parser.

`derive_targets` and the token map need the noun each numeral quantifies ("three red cats" -> "cats").
This module holds the shallow grammar for that: a prompt's words with their numerals, the word classes
that end a phrase, and the choice of the head noun. It may import only the standard library and
`numina.prompts` modules (words, numerals, nouns, lexicon).

Phrase after a numeral (all words joined by spaces or hyphens, never across punctuation):
1. pre-modifiers: adjectives of the lexicon and participles ("-ing"/"-ed" words: "racing cars",
   "floating paper lanterns", "wrecked boats") while no noun has started;
2. the noun run: the following words up to the first phrase end, which is a function word (preposition,
   conjunction, determiner, pronoun, auxiliary: see STOP_WORDS), another numeral, a participle, or a
   common verb of VERBS after the run's first word ("one cyclist race down", "two dogs play");
3. the head noun: for a count other than 1, the first plural-looking word of the run ("two mountain
   goats", "four cherry blossoms swirl", "five debris-pieces fly"); if none looks plural, the last word
   ("two snowman"). For a count of 1, the last word before any plural-looking word that is not the run's
   first word ("one ice cream truck", "one eagle circles", "a distant star glows"); a plural-looking word
   there is taken as a verb. An empty run falls back to the last pre-modifier ("a single string").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from numina.prompts.lexicon import is_adjective
from numina.prompts.nouns import looks_plural
from numina.prompts.numerals import NumeralPhrase, find_numerals
from numina.prompts.words import WordSpan, split_words


def _set(words: str) -> frozenset[str]:
    """A word set from a space-separated string (keeps the tables compact and readable)."""
    return frozenset(words.split())


PREPOSITIONS = _set(
    "in on at of with through across over under near by from to into onto along around behind beside "
    "besides between among amongst amid amidst past toward towards above below beneath underneath inside "
    "outside up down off out for like against within without during after before alongside upon via per "
    "throughout beyond atop except than"
)
CONJUNCTIONS = _set(
    "and or but nor yet so as while whilst when whenever where whereas because since until unless if "
    "though although that which who whom whose then"
)
DETERMINERS = _set(
    "the this that these those their its his her my our your each every another other others some any "
    "all no them they it he she we you i me him us there here what such"
)
AUXILIARIES = _set(
    "is are was were be been being am has have had do does did will would can could may might shall "
    "should must get gets got"
)
ADVERBS = _set(
    "together alone very too also just still not never always again away back almost nearly only "
    "already even quite rather really slowly quickly gently rapidly"
)
STOP_WORDS = PREPOSITIONS | CONJUNCTIONS | DETERMINERS | AUXILIARIES | ADVERBS
# Base-form verbs that end a noun run when they follow its first word ("one model pose for ...").
VERBS = _set(
    "race pose walk play run fly swim jump dance sit stand watch move look ride chase fight sing eat drink "
    "hover fall swing scurry swoop float drift glide spin roll climb crawl hop leap dive talk laugh smile "
    "sleep rest stare wait work cook paint read write sail graze hunt roam wander gather march perform "
    "splash soar circle follow lead carry hold push pull throw catch kick hug kiss bark howl chirp sit "
    "stroll rush dash zoom crash bounce shine glow flutter flap spiral tumble pass cross enter leave "
    "approach meet greet stay live grow bloom sway shake nod point reach wave"
)
# Nouns ending in "-ing" that are not participles.
ING_NOUNS = _set(
    "string spring swing thing king ring wing sting sling sibling duckling ceiling morning evening "
    "pudding earring viking dumpling sapling seedling herring awning icing offspring darling"
)
# Words after which a bare "a"/"an" starts a new clause (its noun is a subject, so it is counted).
CLAUSE_OPENERS = _set("as while whilst when whenever where whereas because then until once")
COORDINATORS = frozenset({"and", "or"})


def is_participle(word: str) -> bool:
    """Whether a lower-case word looks like an "-ing" or "-ed" participle (not "bed", "seed", "string")."""
    if word in ING_NOUNS:
        return False
    if word.endswith("ing") and len(word) >= 6:
        return True
    return word.endswith("ed") and len(word) >= 5 and not word.endswith("eed")


@dataclass(frozen=True)
class PromptWords:
    """The words of a cleaned prompt with their numeral phrases, ready for phrase scanning."""

    text: str
    spans: tuple[WordSpan, ...]
    lower: tuple[str, ...]
    numerals: tuple[NumeralPhrase, ...]
    numeral_of_word: dict[int, int] = field(repr=False)

    @classmethod
    def from_text(cls, text: str) -> PromptWords:
        spans = tuple(split_words(text))
        lower = tuple(span.text.lower() for span in spans)
        numerals = tuple(find_numerals(list(lower), [span.break_before for span in spans]))
        numeral_of_word = {i: k for k, phrase in enumerate(numerals) for i in phrase.indices}
        return cls(text, spans, lower, numerals, numeral_of_word)

    def __len__(self) -> int:
        return len(self.spans)

    def breaks(self, i: int) -> bool:
        """Whether a phrase break (or the text's start or end) lies before word i."""
        return i <= 0 or i >= len(self.spans) or self.spans[i].break_before

    def starts_numeral(self, i: int) -> bool:
        return (
            0 <= i < len(self.spans)
            and i in self.numeral_of_word
            and self.numerals[self.numeral_of_word[i]].start == i
        )


@dataclass(frozen=True)
class NounPhrase:
    """The words after a numeral: pre-modifiers, the noun run, and the word that ended it (if any)."""

    premods: tuple[int, ...]
    run: tuple[int, ...]
    end: int | None  # index of the word that ended the phrase, None at a break or the text's end

    @property
    def candidates(self) -> tuple[int, ...]:
        return self.premods + self.run


def scan_noun_phrase(words: PromptWords, start: int) -> NounPhrase:
    """The noun phrase starting at word `start` (the word after a numeral), see the module docstring."""
    premods: list[int] = []
    run: list[int] = []
    i = start
    end = None
    while i < len(words) and not words.breaks(i):
        w = words.lower[i]
        if w in STOP_WORDS or i in words.numeral_of_word:
            end = i
            break
        if not run and (is_adjective(w) or is_participle(w)):
            premods.append(i)
        elif run and (is_participle(w) or w in VERBS):
            end = i
            break
        else:
            run.append(i)
        i += 1
    return NounPhrase(tuple(premods), tuple(run), end)


def head_noun(words: PromptWords, phrase: NounPhrase, count: int) -> tuple[int | None, bool]:
    """The head noun's word index (None if the phrase has none) and whether a verb follows the head.

    A verb follows when the phrase ended at an auxiliary, a verb of VERBS or an "-ed" participle, or when
    a count-1 run was cut at a plural-looking word ("one eagle circles").
    """
    run = phrase.run
    if not run:
        if phrase.premods:
            return phrase.premods[-1], False
        return None, False
    end_word = words.lower[phrase.end] if phrase.end is not None else ""
    verb_after = (
        end_word in AUXILIARIES or end_word in VERBS or (end_word.endswith("ed") and is_participle(end_word))
    )
    if count != 1:
        for i in run:
            if looks_plural(words.lower[i]):
                return i, verb_after or i != run[-1]
        return run[-1], verb_after
    for k, i in enumerate(run[1:], start=1):
        if looks_plural(words.lower[i]):
            return run[k - 1], True
    return run[-1], verb_after
