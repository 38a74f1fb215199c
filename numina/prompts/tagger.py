"""Optional part-of-speech tagging of adjectives, used only where a tagger is installed.

The adjective lexicon (`numina.prompts.lexicon`) is the reproducible baseline and works alone. Where nltk
(with its perceptron tagger data) or spaCy (with an English model) is installed, a tagger can add the
adjectives the lexicon lacks. Absence is silent: `find_tagger()` returns None. Which source was used is
recorded in every `PromptTokens` (`adjectives_from`), so stored token tables say how they were made. The
tagger never decides numerals, nouns or derived targets. May import only the standard library, and
nltk and spaCy lazily, only when present.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Sequence

# A tagger takes the words of a prompt and says, for each, whether it is an adjective.
AdjectiveTagger = Callable[[Sequence[str]], Sequence[bool]]

SPACY_MODELS = ("en_core_web_sm", "en_core_web_md", "en_core_web_lg", "en_core_web_trf")


def _nltk_tagger() -> AdjectiveTagger | None:
    if importlib.util.find_spec("nltk") is None:
        return None
    try:
        import nltk

        nltk.pos_tag(["a", "red", "cat"])  # raises LookupError when the tagger data is not installed
    except Exception:  # any failure means "not usable here"
        return None

    def tag(words: Sequence[str]) -> list[bool]:
        return [pos.startswith("JJ") for _, pos in nltk.pos_tag(list(words))]

    return tag


def _spacy_tagger() -> AdjectiveTagger | None:
    if importlib.util.find_spec("spacy") is None:
        return None
    try:
        import spacy
        from spacy.tokens import Doc
    except Exception:
        return None
    for name in SPACY_MODELS:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            nlp = spacy.load(name)
        except Exception:
            continue

        def tag(words: Sequence[str], nlp=nlp) -> list[bool]:
            doc = nlp(Doc(nlp.vocab, words=list(words)))
            return [token.pos_ == "ADJ" for token in doc]

        return tag
    return None


@functools.cache
def find_tagger() -> tuple[str, AdjectiveTagger] | None:
    """The first usable installed tagger as (name, tagger): nltk, then spaCy; None when there is none."""
    for name, make in (("nltk", _nltk_tagger), ("spacy", _spacy_tagger)):
        tagger = make()
        if tagger is not None:
            return name, tagger
    return None
