"""Every Python block of docs/grid.md runs: the plain-function example and the linen and
NNX recipes, each training a grid with a traced dropout rate (the blocks assert that the
loss falls)."""

import re
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "grid.md"
# The complete programs on the page (the others are marked fragments of the first).
BLOCKS = [
    block
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    if "import jaxreg.grid as jg" in block
]


def test_the_page_has_the_example_and_both_flax_recipes():
    assert len(BLOCKS) == 3
    assert "flax.linen" in BLOCKS[1] and "nnx.merge" in BLOCKS[2]


@pytest.mark.parametrize("i", range(len(BLOCKS)), ids=["plain", "linen", "nnx"][: len(BLOCKS)])
def test_block_runs(i, capsys):
    namespace = {}
    exec(compile(BLOCKS[i], f"{DOC}:block{i}", "exec"), namespace)
    state = namespace["state"]
    assert int(np.asarray(state.step)[0]) > 0
