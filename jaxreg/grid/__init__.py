"""Train a regularization grid as one compiled, sharded program: ``import jaxreg.grid as jg``.

(Docstring with recipes: see below.)
"""

from jaxreg.grid._engine import Plan as Plan
from jaxreg.grid._grids import Grid as Grid
from jaxreg.grid._grids import product as product
from jaxreg.grid._grids import rows as rows
from jaxreg.grid._state import GridState as GridState
from jaxreg.grid._trainer import Trainer as Trainer

__all__ = ["Grid", "GridState", "Plan", "Trainer", "product", "rows"]
