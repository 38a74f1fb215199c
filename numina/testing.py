"""Tiny random evaluation models for tests and offline trials: CLIP, OWLv2 and GroundingDINO.

Each is written with `save_pretrained` into a folder, so `ClipScorer(folder)`, `Owlv2Counter(folder)`
and `GroundingDinoCounter(folder)` load it through the same `from_pretrained` path as the real model;
tokenizers are built offline with the `tokenizers` library, and every build is deterministic for its
seed. (The tiny Wan pipelines are the built-in `tiny` model: `numina.models.build_tiny_pipeline`.)
May import torch, transformers, tokenizers and the standard library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def save_tiny(folder: str | Path, model_class: type, config: Any, processor: Any, seed: int) -> Path:
    """A seeded random `model_class(config)` and its processor written with save_pretrained to `folder`
    (the global RNG is left as it was)."""
    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# Words the tiny tokenizer keeps whole (one BPE token each); other words split into smaller pieces.
_TINY_WORDS_TEXT = (
    "a an the of on in with and one two three four five six seven eight nine ten "
    "red blue green yellow black white small large cat cats dog dogs bird birds car cars tree trees "
    "apple apples ball balls person people flower flowers chair cup horse boat house book fish "
    "sitting walking running flying floating standing grass street sky field room table water park"
)
_TINY_WORDS = tuple(_TINY_WORDS_TEXT.split())
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _tiny_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE vocabulary and merges: 256 bytes, 256 bytes + '</w>', word merges."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet + [c + "</w>" for c in alphabet])}
    merges: list[tuple[str, str]] = []
    for word in _TINY_WORDS:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        current = symbols[0]
        for symbol in symbols[1:]:
            if (current, symbol) not in merges:
                merges.append((current, symbol))
            current += symbol
            vocab.setdefault(current, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


def tiny_clip_towers(max_length: int, image_size: int, patch_size: int) -> tuple[Any, dict, dict]:
    """An offline CLIP BPE tokenizer and tiny text and vision tower configs (width 32, 2 layers, 4 heads),
    shared by the tiny CLIP here and the tiny OWLv2 of `numina.evaluation.detectors`."""
    from transformers import CLIPTokenizer

    vocab, merges = _tiny_bpe()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    text = {
        **tower,
        "vocab_size": len(vocab),
        "max_position_embeddings": max_length,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return tokenizer, text, {**tower, "image_size": image_size, "patch_size": patch_size}


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random CLIP (model, CLIPTokenizer, CLIPImageProcessor at 32 px) into `folder`.

    Everything is saved with `save_pretrained`, so `ClipScorer(folder)` loads it through the same
    `from_pretrained` path as the real model. Deterministic for a given `seed`; needs no network.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer, text_config, vision_config = tiny_clip_towers(max_length=32, image_size=32, patch_size=8)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    config = CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=16,
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return save_tiny(folder, CLIPModel, config, processor, seed)


def build_tiny_owlv2(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random OWLv2 (64 px images, 16 px patches, CLIP BPE tokenizer) into `folder`.

    Saved with `save_pretrained`, so `Owlv2Counter(folder)` loads it through the real from_pretrained path.
    Deterministic for a given `seed`; needs no network.
    """
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # max length 16, as the real OWLv2 text tower
    tokenizer, text_config, vision_config = tiny_clip_towers(max_length=16, image_size=64, patch_size=16)
    image_processor = Owlv2ImageProcessor(size={"height": 64, "width": 64})
    config = Owlv2Config(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=32,  # the class head compares projected text with vision-width features
    )
    processor = Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return save_tiny(folder, Owlv2ForObjectDetection, config, processor, seed)


# Words the tiny BERT WordPiece vocabulary keeps whole; other words split into single characters.
_TINY_BERT_WORDS_TEXT = (
    "a an the of cat cats dog dogs bird birds car cars tree trees apple apples ball balls person people "
    "flower flowers chair cup horse boat house book fish circle circles square squares"
)
_TINY_BERT_WORDS = tuple(_TINY_BERT_WORDS_TEXT.split())


def build_tiny_grounding_dino(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random GroundingDINO (tiny Swin + tiny BERT, 64 px images) into `folder`.

    The BERT WordPiece tokenizer is built offline (the `tokenizers` library behind `BertTokenizerFast`).
    Saved with `save_pretrained`, so `GroundingDinoCounter(folder)` loads it through the real
    from_pretrained path. Deterministic for a given `seed`; needs no network.
    """
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    characters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    pieces = ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    tokens = specials + characters + pieces + list(_TINY_BERT_WORDS)
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    max_text_len = 32
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=max_text_len)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=4,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        pad_token_id=vocab["[PAD]"],
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        num_queries=20,
        encoder_layers=1,
        decoder_layers=2,  # one layer leaves nothing for the tied bbox heads to tie to
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        d_model=32,
        num_feature_levels=4,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=max_text_len,
    )
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return save_tiny(folder, GroundingDinoForObjectDetection, config, processor, seed)
