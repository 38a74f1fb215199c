"""Prompts: the token map of a prompt (words, token types, token positions) and its counting targets.

`parse_prompt(prompt, tokenizer, targets)` tokenises a prompt exactly as diffusers' `WanPipeline` does and
returns a `PromptTokens`: every word with its type (numeral, noun, adjective, other), its count for
numerals, its token positions, plus EOS and padding positions. Without targets, `derive_targets` reads
them off the prompt's numerals. This package may import only the standard library, transformers and
diffusers; nothing else of numina.

Modules: words (cutting text into words), numerals (numeral table, `parse_numeral`), nouns (singular and
plural forms), lexicon (adjectives), tagger (optional part-of-speech tagger), phrases (the noun a
numeral counts), targets (checking, deriving and linking targets), tokens (the token map).
"""

from numina.prompts.lexicon import ADJECTIVE_GROUPS, ADJECTIVES, is_adjective
from numina.prompts.nouns import looks_plural, same_noun, singular
from numina.prompts.numerals import NumeralPhrase, find_numerals, parse_numeral
from numina.prompts.tagger import find_tagger
from numina.prompts.targets import clean_prompt, derive_targets, validate_targets
from numina.prompts.tokens import TOKEN_TYPES, WORD_TYPES, Numeral, PromptTokens, Word, parse_prompt
from numina.prompts.words import WordSpan, split_words

__all__ = [
    "ADJECTIVES",
    "ADJECTIVE_GROUPS",
    "TOKEN_TYPES",
    "WORD_TYPES",
    "Numeral",
    "NumeralPhrase",
    "PromptTokens",
    "Word",
    "WordSpan",
    "clean_prompt",
    "derive_targets",
    "find_numerals",
    "find_tagger",
    "is_adjective",
    "looks_plural",
    "parse_numeral",
    "parse_prompt",
    "same_noun",
    "singular",
    "split_words",
    "validate_targets",
]
