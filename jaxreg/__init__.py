"""jaxreg: regularization for neural networks in JAX.

Pure, jit-compatible functions driven by explicit PRNG keys: the dropout family,
penalties and constraints, with thin Flax and Optax adapters (``jaxreg.linen``,
``jaxreg.nnx``, ``jaxreg.optax``) that the core never imports.
"""

from jaxreg._dropblock import dropblock as dropblock

# DropConnect
from jaxreg._dropconnect import drop_connect as drop_connect
from jaxreg._dropconnect import drop_connect_dense as drop_connect_dense
from jaxreg._dropconnect import drop_connect_inference as drop_connect_inference
from jaxreg._dropconnect import drop_connect_tree as drop_connect_tree
from jaxreg._dropout import dropout as dropout
from jaxreg._dropout import scale_for_inference as scale_for_inference
from jaxreg._dropout import spatial_dropout as spatial_dropout
from jaxreg._dropout import variational_dropout as variational_dropout
from jaxreg._droppath import drop_path as drop_path
from jaxreg._droppath import drop_path_rates as drop_path_rates
from jaxreg._mask import apply_mask as apply_mask
from jaxreg._mask import bernoulli_mask as bernoulli_mask
from jaxreg._mc import mc_predict as mc_predict
from jaxreg._noise import alpha_dropout as alpha_dropout
from jaxreg._noise import gaussian_dropout as gaussian_dropout

__version__ = "0.1.0.dev0"

__all__ = [
    # Dropout family
    "alpha_dropout",
    "apply_mask",
    "bernoulli_mask",
    "drop_path",
    "drop_path_rates",
    "dropblock",
    "dropout",
    "gaussian_dropout",
    "mc_predict",
    "scale_for_inference",
    "spatial_dropout",
    "variational_dropout",
    # DropConnect
    "drop_connect",
    "drop_connect_dense",
    "drop_connect_inference",
    "drop_connect_tree",
]
