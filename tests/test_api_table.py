"""docs/api_table.md is the public API as inspect.signature sees it, and stays so."""

import difflib
import importlib.util
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_api_table", ROOT / "docs/gen_api_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()
SENTINEL = object()  # its repr has a memory address


def test_committed_table_matches_the_signatures():
    expected = GEN.table()
    committed = GEN.OUTPUT.read_text() if GEN.OUTPUT.exists() else ""
    if committed != expected:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                "docs/api_table.md (committed)",
                "docs/api_table.md (from inspect.signature)",
            )
        )
        pytest.fail(
            "docs/api_table.md is out of date with the public signatures. Regenerate it "
            f"with `python docs/gen_api_table.py` and commit it. Difference:\n{diff}"
        )


def test_every_public_name_of_every_module_is_a_row():
    text = GEN.OUTPUT.read_text()
    for name in GEN.MODULES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            assert f"`{name}.{attr}`" in text, f"{name}.{attr}"


def test_signature_text_is_stable_and_shows_kinds_and_defaults():
    import jaxreg

    def f(key, x, /, y=1, *args, rate, where=jaxreg.kernels_only, init=len, **kw):
        """First line.

        More."""

    text = GEN.signature(f)
    assert text == "(key, x, /, y=1, *args, rate, where=jaxreg.kernels_only, init=len, **kw)"
    assert GEN.signature(lambda a, *, b=None: a) == "(a, *, b=None)"
    assert GEN.summary(f) == "First line."
    # A default object with a memory address in its repr is shown without it.
    assert "0x" not in GEN.signature(lambda a=SENTINEL: a)
    assert inspect.signature(f)  # the generator reads the same signature


def test_a_signature_change_is_caught():
    # Negative control: the table of a changed signature differs from the committed one.
    import jaxreg

    original = jaxreg.dropout
    try:

        def dropout(key, x, *, rate, inverted=False):
            """Changed."""

        jaxreg.dropout = dropout
        assert GEN.table() != GEN.OUTPUT.read_text()
    finally:
        jaxreg.dropout = original
    assert GEN.table() == GEN.OUTPUT.read_text()
