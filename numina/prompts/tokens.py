"""The prompt token map: every word of a prompt, its type, and its token positions in the text encoder input.

Attention analysis and the NUMINA method read cross-attention at the token positions of nouns and
numerals, and compare them with padding positions (Wan's cross-attention has no mask, so padding takes
attention too). This module tokenises a prompt exactly as diffusers' `WanPipeline` does and maps each
word to its positions through the fast tokenizer's offset mapping. It may import only the standard
library, transformers/diffusers (through the tokenizer object and `targets.clean_prompt`) and
`numina.prompts` modules.

Token types, per position: "numeral", "noun" (a target noun), "adjective", "other" (other words,
articles that count nothing, punctuation), "eos", "special" (any other special token a tokenizer adds,
e.g. a BOS), "padding".

Positions of a word: the tokens whose character span (leading/trailing whitespace aside) overlaps the
word. A token that is only a word-start mark (a bare SentencePiece "▁" before the word's first piece)
belongs to the word it starts. Words cut off by truncation have no positions; a prompt longer than the
text encoder's `max_length` tokens is parsed with a warning, and its targets are derived only from the
words the model sees whole.
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from numina.prompts.lexicon import is_adjective
from numina.prompts.nouns import same_noun
from numina.prompts.numerals import ARTICLES
from numina.prompts.phrases import DETERMINERS, STOP_WORDS, PromptWords
from numina.prompts.tagger import AdjectiveTagger, find_tagger
from numina.prompts.targets import (
    clean_prompt,
    derive_links,
    find_occurrences,
    link_numerals,
    validate_targets,
)
from numina.prompts.words import split_words

WORD_TYPES = ("numeral", "noun", "adjective", "other")
TOKEN_TYPES = (*WORD_TYPES, "eos", "special", "padding")
RECORDS_FORMAT = "numina.prompts.PromptTokens/1"
# When a token overlaps several words (rare), it takes the type that comes first here.
_TYPE_PRIORITY = {"noun": 0, "numeral": 1, "adjective": 2, "other": 3}


@dataclass(frozen=True)
class Word:
    """One word of the cleaned prompt.

    `start`/`end` is its character span in the cleaned prompt, `index` its place among the words,
    `positions` its token positions (empty when truncation cut it off). Numerals carry the `count` of
    their whole phrase, `group` (the word indices of that phrase), `quantifies` (the index of the noun
    word they count, if any) and `target` (that noun's target key). Nouns carry `target` (the key they
    match) and `group` (the word indices of that occurrence, for nouns of several words).
    """

    text: str
    start: int
    end: int
    index: int
    positions: tuple[int, ...]
    type: str
    count: int | None = None
    target: str | None = None
    quantifies: int | None = None
    group: tuple[int, ...] = ()

    @property
    def span(self) -> tuple[int, int]:
        return self.start, self.end


@dataclass(frozen=True)
class Numeral:
    """A numeral phrase of the prompt: its text, count, words, token positions and the noun it counts."""

    text: str
    count: int
    words: tuple[int, ...]
    positions: tuple[int, ...]
    noun_word: int | None
    target: str | None


@dataclass(frozen=True)
class PromptTokens:
    """A prompt's token map: the tokenizer's output over all `max_length` positions plus its words.

    Positions 0..n_tokens-1 are the real tokens (EOS included), n_tokens..max_length-1 the padding.
    Build one with `parse_prompt`; store and reload it with `to_records` / `from_records`.
    """

    prompt: str
    cleaned: str
    max_length: int
    input_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    n_tokens: int
    eos_position: int | None
    special_positions: tuple[int, ...]
    words: tuple[Word, ...]
    target_items: tuple[tuple[str, int], ...]
    targets_source: str
    adjectives_from: str
    tokenizer_name: str = ""

    # -- basic views -------------------------------------------------------------------------------

    @property
    def targets(self) -> dict[str, int]:
        """The `{noun: count}` targets (given by the user, or derived from the prompt's numerals)."""
        return dict(self.target_items)

    @property
    def padding(self) -> range:
        """Padding positions (they receive attention in Wan's unmasked cross-attention)."""
        return range(self.n_tokens, self.max_length)

    @property
    def text_positions(self) -> tuple[int, ...]:
        """Real, non-special token positions (the prompt's own tokens, EOS and BOS excluded)."""
        special = set(self.special_positions)
        return tuple(p for p in range(self.n_tokens) if p not in special)

    def words_at(self, position: int) -> tuple[Word, ...]:
        """The words a token position belongs to (usually one; none for punctuation/special/padding)."""
        return tuple(word for word in self.words if position in word.positions)

    def token_types(self) -> list[str]:
        """The type of every position 0..max_length-1 (see TOKEN_TYPES)."""
        types = ["other"] * self.n_tokens + ["padding"] * (self.max_length - self.n_tokens)
        for p in self.special_positions:
            types[p] = "eos" if p == self.eos_position else "special"
        best: dict[int, str] = {}
        for word in self.words:
            for p in word.positions:
                if p not in best or _TYPE_PRIORITY[word.type] < _TYPE_PRIORITY[best[p]]:
                    best[p] = word.type
        for p, kind in best.items():
            types[p] = kind
        return types

    # -- nouns and numerals ------------------------------------------------------------------------

    def target_key(self, noun: str) -> str:
        """The target key a noun names: the key itself, or a key that is another form of it ("cat" for
        target "cats"). ValueError when the noun is not a target."""
        if noun in self.targets:
            return noun
        for key in self.targets:
            if key.lower() == noun.lower() or (
                len(split_words(key)) == 1 and len(split_words(noun)) == 1 and same_noun(key, noun)
            ):
                return key
        raise ValueError(
            f"{noun!r} is not a target of this prompt; targets are {self.targets} "
            f"({self.targets_source}). Use positions() for any other word."
        )

    def occurrences(self, noun: str) -> list[tuple[Word, ...]]:
        """Every occurrence of a target noun in the prompt, as its words, left to right."""
        key = self.target_key(noun)
        seen: dict[tuple[int, ...], tuple[Word, ...]] = {}
        for word in self.words:
            if word.type == "noun" and word.target == key and word.group not in seen:
                seen[word.group] = tuple(self.words[i] for i in word.group)
        return list(seen.values())

    def noun_spans(self, noun: str) -> list[list[int]]:
        """Token positions of each occurrence of a target noun (one list per occurrence, left to right).

        Occurrences cut off by truncation are left out.
        """
        spans = [[p for word in occurrence for p in word.positions] for occurrence in self.occurrences(noun)]
        return [span for span in spans if span]

    def numerals(self) -> list[Numeral]:
        """Every numeral phrase of the prompt, left to right (articles only where they count a noun)."""
        found: dict[tuple[int, ...], Numeral] = {}
        for word in self.words:
            if word.type == "numeral" and word.group not in found:
                group = [self.words[i] for i in word.group]
                found[word.group] = Numeral(
                    text=self.cleaned[group[0].start : group[-1].end],
                    count=word.count if word.count is not None else 0,
                    words=word.group,
                    positions=tuple(p for w in group for p in w.positions),
                    noun_word=word.quantifies,
                    target=word.target,
                )
        return list(found.values())

    def numeral_for(self, noun: str) -> Numeral | None:
        """The numeral that counts a target noun (its first counted occurrence), or None if none does."""
        key = self.target_key(noun)
        return next((numeral for numeral in self.numerals() if numeral.target == key), None)

    def count_in_prompt(self, noun: str) -> int | None:
        """The count the prompt's numerals state for a target noun (summed over its occurrences), or None."""
        key = self.target_key(noun)
        counts = [numeral.count for numeral in self.numerals() if numeral.target == key]
        return sum(counts) if counts else None

    def positions(self, word_or_noun: str) -> list[list[int]]:
        """Token positions of each occurrence of a target noun (any of its forms) or of any word or word
        sequence as written (case-insensitive): one list per occurrence, left to right."""
        try:
            return self.noun_spans(self.target_key(word_or_noun))
        except ValueError:
            pass
        query = [span.text.lower() for span in split_words(word_or_noun)]
        lower = [word.text.lower() for word in self.words]
        n = len(query)
        spans = [
            [p for word in self.words[i : i + n] for p in word.positions]
            for i in range(len(lower) - n + 1)
            if n and lower[i : i + n] == query
        ]
        if not spans:
            raise ValueError(
                f"{word_or_noun!r} is not in the prompt {self.cleaned!r}; "
                f"its words are {[w.text for w in self.words]}"
            )
        return spans

    # -- storage -----------------------------------------------------------------------------------

    def to_records(self) -> dict[str, Any]:
        """A JSON-able record of the token map: a token table over the real positions, the padding token,
        the word table and the targets. `from_records` rebuilds an equal object."""
        types = self.token_types()
        pad = None
        if self.n_tokens < self.max_length:
            pad = {"id": self.input_ids[self.n_tokens], "token": self.tokens[self.n_tokens]}
        word_of = {p: [w.index for w in self.words if p in w.positions] for p in range(self.n_tokens)}
        return {
            "format": RECORDS_FORMAT,
            "prompt": self.prompt,
            "cleaned": self.cleaned,
            "max_length": self.max_length,
            "n_tokens": self.n_tokens,
            "eos_position": self.eos_position,
            "special_positions": list(self.special_positions),
            "targets": dict(self.target_items),
            "targets_source": self.targets_source,
            "adjectives_from": self.adjectives_from,
            "tokenizer_name": self.tokenizer_name,
            "padding": pad,
            "tokens": [
                {
                    "position": p,
                    "id": self.input_ids[p],
                    "token": self.tokens[p],
                    "offset": list(self.offsets[p]),
                    "type": types[p],
                    "words": word_of[p],
                }
                for p in range(self.n_tokens)
            ],
            "words": [
                {
                    "index": w.index,
                    "text": w.text,
                    "span": [w.start, w.end],
                    "positions": list(w.positions),
                    "type": w.type,
                    "count": w.count,
                    "target": w.target,
                    "quantifies": w.quantifies,
                    "group": list(w.group),
                }
                for w in self.words
            ],
        }

    @classmethod
    def from_records(cls, records: Mapping[str, Any]) -> PromptTokens:
        """Rebuild a token map from `to_records` output (e.g. read back from JSON)."""
        if records.get("format") != RECORDS_FORMAT:
            raise ValueError(
                f"not a token-map record: format {records.get('format')!r}, expected {RECORDS_FORMAT!r}"
            )
        max_length, n_tokens = int(records["max_length"]), int(records["n_tokens"])
        table = records["tokens"]
        if len(table) != n_tokens:
            raise ValueError(f"token table has {len(table)} rows, n_tokens says {n_tokens}")
        ids = [int(row["id"]) for row in table]
        tokens = [str(row["token"]) for row in table]
        offsets = [(int(row["offset"][0]), int(row["offset"][1])) for row in table]
        if n_tokens < max_length:
            pad = records["padding"]
            ids += [int(pad["id"])] * (max_length - n_tokens)
            tokens += [str(pad["token"])] * (max_length - n_tokens)
            offsets += [(0, 0)] * (max_length - n_tokens)
        words = tuple(
            Word(
                text=w["text"],
                start=int(w["span"][0]),
                end=int(w["span"][1]),
                index=int(w["index"]),
                positions=tuple(int(p) for p in w["positions"]),
                type=w["type"],
                count=w["count"],
                target=w["target"],
                quantifies=w["quantifies"],
                group=tuple(int(i) for i in w["group"]),
            )
            for w in records["words"]
        )
        eos = records["eos_position"]
        return cls(
            prompt=records["prompt"],
            cleaned=records["cleaned"],
            max_length=max_length,
            input_ids=tuple(ids),
            tokens=tuple(tokens),
            offsets=tuple(offsets),
            n_tokens=n_tokens,
            eos_position=None if eos is None else int(eos),
            special_positions=tuple(int(p) for p in records["special_positions"]),
            words=words,
            target_items=tuple((str(k), int(v)) for k, v in records["targets"].items()),
            targets_source=records["targets_source"],
            adjectives_from=records["adjectives_from"],
            tokenizer_name=records.get("tokenizer_name", ""),
        )


# -- building ------------------------------------------------------------------------------------------


def _tokenize(cleaned: str, tokenizer: Any, max_length: int) -> dict[str, list]:
    """The tokenizer call of `WanPipeline._get_t5_prompt_embeds`, plus offsets and the special-token mask."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            "parse_prompt needs a fast (Rust) tokenizer for its offset mapping; got "
            f"{type(tokenizer).__name__}. Load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )
    if getattr(tokenizer, "padding_side", "right") != "right":
        raise ValueError(
            f"tokenizer pads on the {tokenizer.padding_side!r}; WanPipeline keeps the first seq_len text "
            "embeddings, which assumes right padding. Set tokenizer.padding_side = 'right'."
        )
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    encoding = tokenizer(
        cleaned,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    if len(encoding["input_ids"]) != max_length:
        raise ValueError(
            f"tokenizer returned {len(encoding['input_ids'])} ids, expected max_length={max_length}"
        )
    return encoding


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    """A character span without its leading and trailing whitespace (may become empty)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _word_positions(
    cleaned: str, spans: Sequence, offsets: Sequence[tuple[int, int]], real: Sequence[int]
) -> list[list[int]]:
    """Token positions of every word, from the offset mapping of the real (non-special) positions."""
    positions: list[list[int]] = [[] for _ in spans]
    ends = [span.end for span in spans]
    owner: dict[int, list[int]] = {}
    marks: list[int] = []
    for p in real:
        start, end = _strip(cleaned, *offsets[p])
        if start >= end:
            marks.append(p)
            continue
        k = bisect.bisect_right(ends, start)
        while k < len(spans) and spans[k].start < end:
            positions[k].append(p)
            owner.setdefault(p, []).append(k)
            k += 1
    real_set = set(real)
    for p in marks:  # a bare word-start mark belongs to the word whose first token follows it
        q = p + 1
        if q not in real_set or q not in owner:
            continue
        k = owner[q][0]
        if positions[k][0] == q and not cleaned[offsets[p][0] : spans[k].start].strip():
            positions[k].insert(0, p)
    return positions


def _adjective_flags(words: PromptWords, tagger: str | AdjectiveTagger) -> tuple[list[bool], str]:
    """Which words are adjectives, and from which source ("lexicon", "lexicon+nltk", ...)."""
    flags = []
    for i, w in enumerate(words.lower):
        flag = is_adjective(w)
        if flag and i > 0 and not words.breaks(i):  # "across a plain as", "in the light.": a noun
            before = words.lower[i - 1]
            after_ends = words.breaks(i + 1) or (words.lower[i + 1] in STOP_WORDS - {"and", "or"})
            if (before in DETERMINERS or before in ARTICLES) and after_ends:
                flag = False
        flags.append(flag)
    source = "lexicon"
    if tagger == "lexicon":
        return flags, source
    if tagger == "auto":
        found = find_tagger()
        if found is None:
            return flags, source
        name, function = found
    elif callable(tagger):
        name, function = getattr(tagger, "__name__", "custom"), tagger
    else:
        raise ValueError(f"tagger must be 'auto', 'lexicon' or a callable, got {tagger!r}")
    tagged = list(function([span.text for span in words.spans]))
    if len(tagged) != len(words):
        raise ValueError(f"adjective tagger {name!r} returned {len(tagged)} flags for {len(words)} words")
    return [a or bool(b) for a, b in zip(flags, tagged, strict=True)], f"{source}+{name}"


def _seen_words(
    words: PromptWords,
    offsets: Sequence[tuple[int, int]],
    real: Sequence[int],
    n_tokens: int,
    max_length: int,
) -> int:
    """How many leading words the text encoder sees whole: all of them unless truncation cut the prompt."""
    if n_tokens < max_length:
        return len(words)
    visible_end = max((offsets[p][1] for p in real), default=0)
    return sum(1 for span in words.spans if span.end <= visible_end)


def _resolve_targets(
    words: PromptWords, targets: Mapping[str, int] | None, seen: int
) -> tuple[dict[str, int], dict[int, str], dict[int, tuple[int, ...]], dict[int, int], str]:
    """Targets, word -> target key, word -> occurrence group, numeral phrase -> counted noun word, source.

    Derived targets come from the first `seen` words only (what the model sees): a numeral cut off by
    truncation must not become a target the video is corrected towards.
    """
    if targets is None:
        visible = words
        if seen < len(words):
            visible = PromptWords.from_text(words.text[: words.spans[seen - 1].end] if seen else "")
        resolved, links = derive_links(visible)
        source = "derived"
    else:
        resolved, links, source = validate_targets(targets), None, "given"
    word_target: dict[int, str] = {}
    word_group: dict[int, tuple[int, ...]] = {}
    for noun in resolved:
        found = find_occurrences(words, noun)
        if not found:
            raise ValueError(
                f"target noun {noun!r} is not in the prompt {words.text!r}. Its words are "
                f"{[span.text for span in words.spans]}; give each noun as written in the prompt "
                "(singular and plural forms match each other, a hyphenated part such as 'debris' in "
                "'debris-pieces' is a word)."
            )
        for group in found:
            for i in group:
                if i in word_target and word_target[i] != noun:
                    raise ValueError(
                        f"targets {word_target[i]!r} and {noun!r} both match the word "
                        f"{words.spans[i].text!r}; give each noun once"
                    )
                word_target[i] = noun
                word_group[i] = group
    if links is None:
        links = link_numerals(words, word_target)
    return resolved, word_target, word_group, links, source


def parse_prompt(
    prompt: str,
    tokenizer: Any,
    targets: Mapping[str, int] | None = None,
    max_length: int = 512,
    *,
    tagger: str | Callable[[Sequence[str]], Sequence[bool]] = "auto",
) -> PromptTokens:
    """Tokenise a prompt as `WanPipeline` does and map its words, types and token positions.

    `tokenizer`: any Hugging Face fast tokenizer (the pipeline's UMT5 one, or the tiny test one).
    `targets`: `{noun: count}` as written in the prompt; None derives them from the prompt's numerals
    (`derive_targets`). A target noun missing from the prompt is a ValueError listing the prompt's words.
    `max_length`: the pipeline's `max_sequence_length` (512 for Wan).
    `tagger`: "auto" adds the adjectives of an installed part-of-speech tagger (nltk or spaCy) to the
    lexicon's, silently none when none is installed; "lexicon" uses the lexicon alone; a callable
    (words -> adjective flags) is used as the tagger. The source is recorded in `adjectives_from`.
    """
    cleaned = clean_prompt(prompt)
    encoding = _tokenize(cleaned, tokenizer, max_length)
    ids = [int(i) for i in encoding["input_ids"]]
    mask = [int(m) for m in encoding["attention_mask"]]
    special = [int(s) for s in encoding["special_tokens_mask"]]
    offsets = [(int(s), int(e)) for s, e in encoding["offset_mapping"]]
    n_tokens = sum(mask)
    if mask != [1] * n_tokens + [0] * (max_length - n_tokens):
        raise ValueError("attention mask is not a run of ones followed by padding; cannot place the padding")
    special_positions = tuple(p for p in range(n_tokens) if special[p])
    eos_id = getattr(tokenizer, "eos_token_id", None)
    eos_candidates = [p for p in special_positions if ids[p] == eos_id]
    eos_position = eos_candidates[-1] if eos_candidates else None

    words = PromptWords.from_text(cleaned)
    real = [p for p in range(n_tokens) if not special[p]]
    seen = _seen_words(words, offsets, real, n_tokens, max_length)
    if seen < len(words):
        warnings.warn(
            f"the prompt is longer than the text encoder's {max_length} tokens: the model does not see "
            f"{len(words) - seen} of its {len(words)} words, from {words.spans[seen].text!r} on "
            f"({cleaned[words.spans[seen].start :][:60]!r}...). Targets are derived only from the words it "
            "sees; shorten the prompt, or give the targets (--counts) for what it sees.",
            stacklevel=2,
        )
    resolved, word_target, word_group, links, source = _resolve_targets(words, targets, seen)
    positions = _word_positions(cleaned, words.spans, offsets, real)
    for noun in resolved:
        if not any(positions[i] for i, key in word_target.items() if key == noun):
            raise ValueError(
                f"target noun {noun!r} lies beyond the first {max_length} tokens and was cut off by "
                "truncation; shorten the prompt"
            )
    adjective, adjectives_from = _adjective_flags(words, tagger)

    numeral_info: dict[int, tuple[int, tuple[int, ...], int | None]] = {}
    for k, phrase in enumerate(words.numerals):
        if phrase.article and k not in links:
            continue  # an article that counts no target noun
        noun_word = links.get(k)
        for i in phrase.indices:
            numeral_info[i] = (phrase.count, tuple(phrase.indices), noun_word)

    built = []
    for i, span in enumerate(words.spans):
        count = target = quantifies = None
        group: tuple[int, ...] = ()
        if i in numeral_info:
            kind = "numeral"
            count, group, quantifies = numeral_info[i]
            target = word_target.get(quantifies) if quantifies is not None else None
        elif i in word_target:
            kind, target, group = "noun", word_target[i], word_group[i]
        elif adjective[i]:
            kind = "adjective"
        else:
            kind = "other"
        built.append(
            Word(
                text=span.text,
                start=span.start,
                end=span.end,
                index=i,
                positions=tuple(positions[i]),
                type=kind,
                count=count,
                target=target,
                quantifies=quantifies,
                group=group,
            )
        )
    return PromptTokens(
        prompt=prompt,
        cleaned=cleaned,
        max_length=max_length,
        input_ids=tuple(ids),
        tokens=tuple(tokenizer.convert_ids_to_tokens(ids)),
        offsets=tuple(offsets),
        n_tokens=n_tokens,
        eos_position=eos_position,
        special_positions=special_positions,
        words=tuple(built),
        target_items=tuple(resolved.items()),
        targets_source=source,
        adjectives_from=adjectives_from,
        tokenizer_name=str(getattr(tokenizer, "name_or_path", "") or ""),
    )
