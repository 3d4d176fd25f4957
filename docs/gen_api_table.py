"""Writes docs/api_table.md: every public function and class of jaxreg with its signature.

Run ``python docs/gen_api_table.py`` after changing a public signature (or adding a
module to ``MODULES``); ``tests/test_api_table.py`` regenerates the table in memory and
fails when the committed file differs, so the two cannot drift apart.

The table lists, for each module in ``MODULES``, every name in its ``__all__`` (sorted),
its ``inspect.signature`` (parameter names, kinds and defaults; annotations are left to
the docstrings, so the table stays readable) and the first line of its docstring.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

# The public modules, in the order the table shows them. Add new ones here.
MODULES = (
    "jaxreg",
    "jaxreg.optax",
    "jaxreg.linen",
    "jaxreg.nnx",
    "jaxreg.grid",
)

OUTPUT = Path(__file__).resolve().parent / "api_table.md"

HEADER = """\
# API table

Every public function and class, generated from `inspect.signature` by
`python docs/gen_api_table.py`; `tests/test_api_table.py` fails when this file is out of
date. Signatures show parameter names, kinds (`*` starts the keyword-only ones) and
defaults; types are in the docstrings.
"""

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _default(value: Any) -> str:
    """A stable text for a default: no memory addresses, no private module paths.

    jaxreg's functions read ``jaxreg.<name>``; other functions and classes (flax's
    initializers, dtypes) their qualified name only, which does not move with the
    private module they are defined in.
    """
    if (
        inspect.isfunction(value)
        or inspect.isbuiltin(value)
        or inspect.isclass(value)
    ):
        name = getattr(
            value, "__qualname__", getattr(value, "__name__", repr(value))
        )
        module = getattr(value, "__module__", "") or ""
        return f"jaxreg.{name}" if module.startswith("jaxreg") else name
    return _ADDRESS.sub("", repr(value))


def _signature(obj: Any) -> inspect.Signature:
    """``inspect.signature``, or that of ``__init__`` where a metaclass hides it.

    ``flax.nnx.Module`` classes report ``(*args, **kwargs)``; their ``__init__`` (without
    ``self``) is what users call.
    """
    sig = inspect.signature(obj)
    kinds = [p.kind for p in sig.parameters.values()]
    if inspect.isclass(obj) and kinds == [
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.VAR_KEYWORD,
    ]:
        init = inspect.signature(obj.__init__)
        sig = init.replace(
            parameters=list(init.parameters.values())[1:]
        )  # without self
    return sig


def signature(obj: Any) -> str:
    """``(key, x, *, rate, inverted=True)``: names, kinds and defaults of ``obj``'s call."""
    try:
        sig = _signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    parts = []
    kinds = inspect.Parameter
    seen_star = False
    for i, p in enumerate(sig.parameters.values()):
        if p.kind is kinds.KEYWORD_ONLY and not seen_star:
            parts.append("*")
            seen_star = True
        if p.kind is kinds.VAR_POSITIONAL:
            seen_star = True
            text = f"*{p.name}"
        elif p.kind is kinds.VAR_KEYWORD:
            text = f"**{p.name}"
        else:
            text = p.name
        if p.default is not inspect.Parameter.empty:
            text += f"={_default(p.default)}"
        parts.append(text)
        following = list(sig.parameters.values())[i + 1 : i + 2]
        if p.kind is kinds.POSITIONAL_ONLY and (
            not following or following[0].kind is not kinds.POSITIONAL_ONLY
        ):
            parts.append("/")
    return "(" + ", ".join(parts) + ")"


def summary(obj: Any) -> str:
    """The first line of the docstring."""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(modules: tuple[str, ...] = MODULES) -> str:
    """The whole markdown file as a string."""
    out = [HEADER]
    for name in modules:
        module = importlib.import_module(name)
        out.append(f"\n## `{name}`\n")
        out.append("| name | signature | summary |")
        out.append("|---|---|---|")
        for attr in sorted(module.__all__):
            obj = getattr(module, attr)
            kind = "class " if inspect.isclass(obj) else ""
            out.append(
                f"| {kind}`{name}.{attr}` | `{_cell(signature(obj))}` | {_cell(summary(obj))} |"
            )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Writes the table (or, with ``--check``, only says whether it is up to date)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file is stale"
    )
    args = parser.parse_args(argv)
    text = table()
    if args.check:
        stale = not OUTPUT.exists() or OUTPUT.read_text() != text
        print(f"{OUTPUT} is {'out of date' if stale else 'up to date'}")
        return 1 if stale else 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
