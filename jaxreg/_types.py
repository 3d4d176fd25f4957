"""Type aliases shared by every module (one definition each)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

Array = jax.Array
# A drop probability: a Python number (validated to a Python float, which may take
# static shortcuts) or a scalar array that may be traced.
Rate = float | Array
# A non-negative coefficient (penalty strength, threshold, bound), Python or array.
Strength = float | Array
Shape = tuple[int, ...]
Axis = int | Sequence[int]
PyTree = Any
