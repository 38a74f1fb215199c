"""The README's code examples run as written (on the built-in tiny pipeline) and read what they say."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _section_code(title: str, until: str) -> str:
    text = README.read_text()
    section = text[text.index(title) : text.index(until)]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))


@pytest.mark.slow  # two 20-step generations of the tiny pipeline
def test_capturing_and_reading_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = _section_code("## Capturing attention in your own code", "## The diagnosis")
    assert "run_with_capture" in code and "open_store" in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.replace("runs/.../attention.h5", "attention.h5"), str(README), "exec"), namespace)
    heads, frames, height, width = (namespace["geometry"].heads, namespace["geometry"].frames,
                                    namespace["geometry"].height, namespace["geometry"].width)  # fmt: skip
    memory = namespace["capture"]["cross_attention/probs"].sel(step=8, branch="cond", layer=3, token=1).values
    for probs in (namespace["one"], memory):  # the file's and the memory's, each read as the README says
        assert probs.shape == (heads, frames, height, width) and np.isfinite(probs).all()
    assert namespace["scores"].dims == ("layer", "head", "frame", "term")
