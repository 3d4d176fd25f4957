"""jaxreg.grid: a regularization grid trained as one compiled program (checkpoint part).

Importing it imports neither orbax nor tqdm nor matplotlib: ``Checkpointer`` imports
orbax-checkpoint (extra ``jaxreg[grid]``) only when it saves or restores.
"""

from jaxreg.grid._checkpoint import Checkpointer as Checkpointer
from jaxreg.grid._checkpoint import fingerprint as fingerprint

__all__ = ["Checkpointer", "fingerprint"]
