"""Gate G1's probe recovers a planted count from the text states and finds none where none was planted."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from numina.countworld.gates import count_probe
from numina.models.countworld import countworld_tokenizer


class OneHotEncoder(torch.nn.Module):
    """A stand-in text encoder whose state at each position is the one-hot of its token, plus (with
    `reads_left`) the one-hot of the token two places before it: in "three red circles" the noun then
    carries its numeral."""

    def __init__(self, vocabulary: int, reads_left: bool) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.eye(vocabulary), requires_grad=False)
        self.reads_left = reads_left

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        states = self.table[ids]
        if self.reads_left:
            states = torch.cat([states, torch.nn.functional.pad(states, (0, 0, 2, 0))[:, :-2]], dim=-1)
        return SimpleNamespace(last_hidden_state=states)


@pytest.mark.parametrize("reads_left", [True, False])
def test_count_probe_reads_the_count_only_where_it_is(reads_left: bool):
    tokenizer = countworld_tokenizer()
    pipeline = SimpleNamespace(tokenizer=tokenizer, text_encoder=OneHotEncoder(len(tokenizer), reads_left))
    result = count_probe(pipeline, n=400, seed=1)
    assert result["numeral_probe"] == 1.0  # the numeral's own token tells the count
    if reads_left:
        assert result["noun_probe"] == 1.0
    else:  # only "circle" against "circles" tells anything: count 1 apart, the rest near chance
        assert result["noun_probe"] < 0.5
