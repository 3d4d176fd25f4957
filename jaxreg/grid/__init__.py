"""Train a regularization grid as one compiled, sharded program: ``import jaxreg.grid as jg``.

Importing it imports neither orbax nor tqdm nor matplotlib: ``Checkpointer`` imports
orbax-checkpoint (extra ``jaxreg[grid]``) only when it saves or restores.
"""

from jaxreg.grid._checkpoint import Checkpointer as Checkpointer
from jaxreg.grid._checkpoint import fingerprint as fingerprint
from jaxreg.grid._engine import Plan as Plan
from jaxreg.grid._grids import Grid as Grid
from jaxreg.grid._grids import product as product
from jaxreg.grid._grids import rows as rows
from jaxreg.grid._state import GridState as GridState
from jaxreg.grid._trainer import Trainer as Trainer

__all__ = ["Checkpointer", "Grid", "GridState", "Plan", "Trainer", "fingerprint", "product", "rows"]
