"""Targets: the `{noun: count}` a generation must honour, checked when given, derived when not.

The user gives targets as `{noun: count}` (CountBench gives them in `noun_counts.jsonl`); a key is the
noun as written in the prompt, possibly part of a hyphenated word ("debris" in "debris-pieces"). This
module checks given targets, derives targets from a prompt's numerals when none are given, finds the
noun's occurrences, and links each numeral to the target noun it counts. It may import only the standard
library, diffusers (for the Wan pipeline's prompt cleaning) and `numina.prompts` modules.

When is "a"/"an" a count of 1?
- Always when it is part of a longer numeral ("a single", "a lone", "a pair of", "a dozen").
- With targets (given or derived): when the head noun of its phrase is an occurrence of a target noun,
  directly or through pre-modifiers and compound words ("a black cat", "a ground crew-member"; not "a cat
  tree", whose head is "tree"); otherwise it is an article.
- To derive targets, a bare "a"/"an" makes its noun a target only when the noun phrase is a subject:
  at the start of the prompt or after punctuation ("A cat ...", "..., a person walked"), after a clause
  opener ("as a single whale breaches", "while a cat sleeps"), or after "and"/"or" when the conjunct
  before it was counted ("A tiger and a lion") or a verb follows its noun ("and a security camera is
  watching"). An article after a verb or preposition ("reading a book", "in a park") is not counted,
  nor is one whose noun is a collective followed by "of" and a numeral ("a flock of six sparrows").

Deriving targets: every numeral phrase (and every bare article allowed above) that has a head noun
(`numina.prompts.phrases`) adds its count to that noun; the key is the noun as written at its first
counted occurrence. "zero" before a singular-looking noun is not a count ("in zero gravity"). Forms of
one noun are merged ("one cat ... two cats" -> {"cat": 3}), and once a noun is a target, every other
article whose head noun it is counts too ("a cat chasing a cat" -> {"cat": 2}).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Mapping

from numina.prompts.nouns import looks_plural, same_noun
from numina.prompts.phrases import CLAUSE_OPENERS, COORDINATORS, PromptWords, head_noun, scan_noun_phrase
from numina.prompts.words import split_words


@functools.cache
def _prompt_clean():
    """diffusers' Wan prompt cleaning, imported on first use (importing the pipeline module is slow)."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    return prompt_clean


def clean_prompt(prompt: str) -> str:
    """The prompt exactly as `WanPipeline` cleans it before tokenising (ftfy if installed, html unescape,
    whitespace collapsed)."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    return _prompt_clean()(prompt)


def validate_targets(targets: Mapping[str, int]) -> dict[str, int]:
    """Check a `{noun: count}` mapping: non-empty string keys, counts that are non-negative ints."""
    if not isinstance(targets, Mapping):
        raise TypeError(f"targets must be a mapping {{noun: count}}, got {type(targets).__name__}")
    checked: dict[str, int] = {}
    for noun, count in targets.items():
        if not isinstance(noun, str) or not split_words(noun):
            raise ValueError(f"target noun {noun!r} must be a non-empty word (targets: {dict(targets)})")
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
            raise ValueError(
                f"count for noun {noun!r} must be a non-negative int, got {count!r} "
                f"(targets: {dict(targets)})"
            )
        checked[noun] = int(count)
    return checked


def find_occurrences(words: PromptWords, noun: str) -> list[tuple[int, ...]]:
    """Every occurrence of a target noun as a tuple of word indices, left to right.

    A one-word noun matches any form of itself (cat/cats/Cat); a noun of several words ("ice cream",
    "crew-member") matches consecutive words, the last in any singular/plural form.
    """
    parts = [span.text.lower() for span in split_words(noun)]
    n = len(parts)
    found = []
    for i in range(len(words) - n + 1):
        if list(words.lower[i : i + n - 1]) == parts[:-1] and same_noun(words.lower[i + n - 1], parts[-1]):
            if any(words.breaks(i + k) for k in range(1, n)):
                continue
            found.append(tuple(range(i, i + n)))
    return found


def _article_is_count(
    words: PromptWords, start: int, phrase_end: int | None, head: int, verb_after: bool, counted: set[int]
) -> bool:
    """The derivation rule for a bare "a"/"an" at word `start` (see the module docstring)."""
    if (
        phrase_end is not None
        and words.lower[phrase_end] == "of"
        and not words.breaks(phrase_end + 1)
        and words.starts_numeral(phrase_end + 1)
    ):
        return False  # "a flock of six sparrows": the inner numeral counts
    if words.breaks(start):
        return True
    previous = words.lower[start - 1]
    if previous in CLAUSE_OPENERS:
        return True
    if previous in COORDINATORS:
        before = start - 2
        return verb_after or (before >= 0 and not words.breaks(start - 1) and before in counted)
    return False


def link_numerals(words: PromptWords, target_words: Mapping[int, str]) -> dict[int, int]:
    """For each numeral phrase (by index) that quantifies a target noun word, that word's index.

    `target_words` maps the word indices of target occurrences to their target key. A numeral quantifies
    the head noun of its phrase when that head is a target word ("a cat tree" counts a tree, not a cat).
    An explicit numeral (not a bare article) whose head is no target falls back to the first target word
    among its phrase's pre-modifiers and noun run, so a target named by its modifier is still counted
    ({"koi": 8} in "eight golden koi fish").
    """
    links = {}
    for k, phrase in enumerate(words.numerals):
        noun_phrase = scan_noun_phrase(words, phrase.stop)
        head, _ = head_noun(words, noun_phrase, phrase.count)
        if head is not None and head in target_words:
            links[k] = head
        elif not phrase.article:
            found = [i for i in noun_phrase.candidates if i in target_words]
            if found:
                links[k] = found[0]
    return links


def derive_links(words: PromptWords) -> tuple[dict[str, int], dict[int, int]]:
    """Derived targets and, per counted numeral phrase index, the word index of the noun it counts."""
    targets: dict[str, int] = {}
    links: dict[int, int] = {}
    counted: set[int] = set()
    for k, phrase in enumerate(words.numerals):
        noun_phrase = scan_noun_phrase(words, phrase.stop)
        head, verb_after = head_noun(words, noun_phrase, phrase.count)
        if head is None:
            continue
        if phrase.count == 0 and not looks_plural(words.lower[head]):
            continue  # "in zero gravity": a mass noun, not a count of zero
        if phrase.article and not _article_is_count(
            words, phrase.start, noun_phrase.end, head, verb_after, counted
        ):
            continue
        written = words.spans[head].text
        key = next((key for key in targets if same_noun(key, written)), written)
        targets[key] = targets.get(key, 0) + phrase.count
        links[k] = head
        counted.add(head)
    # Second pass: once a noun is a target, every other article that quantifies it counts as well.
    target_words = {i: key for key in targets for (i,) in find_occurrences(words, key)}
    for k, i in link_numerals(words, target_words).items():
        if k not in links and words.numerals[k].article:
            links[k] = i
            targets[target_words[i]] += 1
    return targets, links


def derive_targets(prompt: str) -> dict[str, int]:
    """Targets `{noun: count}` read off a prompt's numerals ("three red cats and two dogs" ->
    {"cats": 3, "dogs": 2}), for prompts given without targets. Keys are the nouns as written."""
    targets, _ = derive_links(PromptWords.from_text(clean_prompt(prompt)))
    return targets
