"""Gate G1 of a CountWorld model organism: does the text encoder pass the number on?

A model can only draw "three" if the number reaches the transformer. Cross-attention reads the
encoder's output states, so the count has to be readable there: at the numeral's own position (are
one..eight told apart at all?) and, what the paper's diagnosis is about, at the noun's position (does
the noun carry its number, or must the image tokens find it in the numeral's diffuse attention?).
Both are measured as the cross-validated accuracy of a linear probe (logistic regression) that
predicts the count from one state, over single-kind captions of the model's world. The first
CountWorld's frozen random encoder reached 0.47 at the noun; gate G1 asks for >= 0.8.
May import numpy, torch, scikit-learn and numina.countworld (world, world2, joint_training).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from numina.countworld import world2
from numina.countworld.joint_training import encode_text, tokenize
from numina.countworld.world import NUMERALS

PROBE_FOLDS = 5


@torch.no_grad()
def word_states(pipeline, captions: list[str], words: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's output states (as the pipeline embeds prompts) at each caption's numeral and noun:
    `words[i]` = (numeral, noun) of caption i, each one token of the world's tokenizer, taken at its first
    occurrence. (N, width) twice."""
    ids, mask = tokenize(pipeline.tokenizer, captions)
    device = next(pipeline.text_encoder.parameters()).device
    states = encode_text(pipeline.text_encoder.eval(), ids.to(device), mask.to(device)).float().cpu()

    def position(row: int, word: str) -> int:
        token = pipeline.tokenizer.convert_tokens_to_ids("▁" + word)
        found = (ids[row] == token).nonzero()
        if len(found) == 0:
            raise ValueError(f"{word!r} is not one token of {captions[row]!r}")
        return int(found[0])  # the first occurrence: the first kind's

    rows = range(len(captions))
    numeral = torch.stack([states[i, position(i, words[i][0])] for i in rows])
    noun = torch.stack([states[i, position(i, words[i][1])] for i in rows])
    return numeral.numpy(), noun.numpy()


def count_probe(pipeline, n: int = 2000, seed: int = 0, max_kinds: int = 3) -> dict[str, float]:
    """Gate G1: cross-validated accuracy of predicting the first kind's count (1-8) from its numeral's
    and from its noun's output state, over `n` captions of 1..`max_kinds` kinds; chance is 1/8. With
    several kinds the other numerals are in the same sentence, so the noun must hold its own."""
    rng = np.random.default_rng(seed)
    scenes = world2.sample_scenes(rng, n, max_kinds=max_kinds)
    words = [(NUMERALS[s.kinds[0].count - 1], s.kinds[0].noun) for s in scenes]
    numeral, noun = word_states(pipeline, [s.caption for s in scenes], words)
    counts = np.array([s.kinds[0].count for s in scenes])

    def probe(features: np.ndarray) -> float:
        model = LogisticRegression(max_iter=2000)
        return float(cross_val_score(model, features, counts, cv=PROBE_FOLDS).mean())

    return {"numeral_probe": probe(numeral), "noun_probe": probe(noun), "captions": n}
