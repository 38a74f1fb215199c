"""A small T5-style tokenizer built locally with `tokenizers`, for the tiny offline pipelines.

The real Wan pipelines use the UMT5 SentencePiece (Unigram) tokenizer. This module builds a Unigram
model with the same conventions (Metaspace "▁" word prefix, `<pad>`=0, `</s>`=1, `<unk>`=2, an `</s>`
appended to every prompt) from a fixed vocabulary, so that common words are one token and other words
split into several pieces, as with the real tokenizer. May import tokenizers and transformers.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"

# Whole words the tiny tokenizer keeps as one piece; every other word is split into pieces.
_WHOLE_WORDS_TEXT = (
    "a an one two three four five six seven eight nine ten single lone pair couple dozen "
    "red blue green yellow black white grey gray orange purple pink brown golden silver "
    "small large big tiny little tall short huge "
    "cat dog bird car tree person people apple ball flower chair cup horse boat house book "
    "circle square triangle star child children fish sofa table floor grass street sky field room "
    "the of on in at with and through across over under near by is are sitting walking running "
    "flying floating standing water park night day"
)
WHOLE_WORDS = tuple(_WHOLE_WORDS_TEXT.split())
# Sub-word pieces (with and without the word-start mark) so that other words get realistic splits.
_PIECES = "s es ing ed er ly un re in on an en or ar al le st tr ch sh th ou ow ea oo ee ight tion ment"

_WORD_SCORE, _PIECE_SCORE, _CHAR_SCORE = -4.0, -7.0, -10.0


def _vocabulary(whole_words: tuple[str, ...]) -> list[tuple[str, float]]:
    """Pieces with log-probability scores: whole words beat pieces, pieces beat single characters."""
    vocab: list[tuple[str, float]] = [(PAD, 0.0), (EOS, 0.0), (UNK, 0.0), ("▁", _PIECE_SCORE)]
    seen = {piece for piece, _ in vocab}

    def add(piece: str, score: float) -> None:
        if piece not in seen:
            seen.add(piece)
            vocab.append((piece, score))

    for word in whole_words:
        add("▁" + word, _WORD_SCORE)
        add("▁" + word.capitalize(), _WORD_SCORE)
    for piece in _PIECES.split():
        add(piece, _PIECE_SCORE)
        add("▁" + piece, _PIECE_SCORE)
    for char in string.ascii_letters + string.digits + string.punctuation:
        add(char, _CHAR_SCORE)
        add("▁" + char, _CHAR_SCORE - 0.5)
    return vocab


def build_tiny_tokenizer(whole_words: tuple[str, ...] = WHOLE_WORDS) -> PreTrainedTokenizerFast:
    """Build a T5-style tokenizer that keeps `whole_words` as one piece each (deterministic: a fixed
    vocabulary, no training). The default is the tiny random pipelines' general vocabulary; a model
    trained on a closed world (CountWorld) passes that world's words."""
    tokenizer = Tokenizer(models.Unigram(_vocabulary(tuple(whole_words)), unk_id=2, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, eos_token=EOS, unk_token=UNK, model_max_length=512
    )
