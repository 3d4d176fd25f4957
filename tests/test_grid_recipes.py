"""docs/grid.md holds the three recipes: a plain function, a linen Module, an NNX Module.

``tests/test_docs.py`` runs every block verbatim; the linen and NNX recipes assert that
the loss of every model in their grid falls, so a recipe that stops training fails there.
"""

import re
from pathlib import Path

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
    for block in BLOCKS[1:]:  # each recipe takes a traced rate and checks that it trains
        assert 'hp["rate"]' in block and "assert np.all(losses[-1] < losses[0])" in block
