"""Command-line helpers of the examples: one-line argparse errors, typed flags, progress.

Every example parses its flags with ``example_parser`` (``--smoke``, ``--out``) and the
typed ``float_list``/``positive_int``/``positive_float``; a bad flag exits with code 2
and one line naming the flag.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable


def progress(total_chunks: int, *, models: int, chunk_steps: int, initial: int = 0, **kwargs):
    """A tqdm bar over chunks that counts model-steps (rate in model-steps/s, ETA).

    Call ``bar.update(1)`` after each chunk. Drawn on stderr; off when not a terminal
    unless ``disable=False`` is passed.
    """
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", None)
    kwargs.setdefault("desc", f"{models} models")
    return tqdm(
        total=total_chunks,
        initial=initial,
        unit=" model-steps",
        unit_scale=models * chunk_steps,
        dynamic_ncols=True,
        **kwargs,
    )


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: argument --x: ...``, exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def float_list(
    *, low: float | None = None, high: float | None = None, high_open: bool = False
) -> Callable[[str], list[float]]:
    """An argparse ``type`` for comma-separated floats in [low, high] (or [low, high)).

    Errors (empty list, non-numeric, out of range, NaN) become argparse errors, which
    ``Parser`` prints on one line naming the argument, with exit code 2.
    """

    def parse(text: str) -> list[float]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"needs at least one value, got {text!r}")
        values = []
        for item in items:
            try:
                v = float(item)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{item!r} is not a number") from None
            if math.isnan(v) or (low is not None and v < low) or (high is not None and v > high):
                raise argparse.ArgumentTypeError(
                    f"{item} is outside {_interval(low, high, high_open)}"
                )
            if high_open and v == high:
                raise argparse.ArgumentTypeError(
                    f"{item} is outside {_interval(low, high, high_open)}"
                )
            values.append(v)
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"values repeat in {text!r}")
        return values

    return parse


def _interval(low: float | None, high: float | None, high_open: bool) -> str:
    lo = "(-inf" if low is None else f"[{low:g}"
    hi = "inf)" if high is None else f"{high:g}{')' if high_open else ']'}"
    return f"{lo}, {hi}"


def positive_int(text: str) -> int:
    """An argparse ``type`` for an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type`` for a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def fail(message: str, code: int = 2) -> None:
    """Prints one line to stderr and exits (for checks after argument parsing)."""
    print(message, file=sys.stderr)
    raise SystemExit(code)


def example_parser(doc: str, name: str) -> Parser:
    """The examples' shared flags: ``--smoke`` and ``--out`` (default ``results/<name>``)."""
    parser = Parser(description=doc.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long run, tiny grid")
    parser.add_argument("--out", default=os.path.join("results", name), help="output folder")
    return parser
