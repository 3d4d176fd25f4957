"""jaxreg: regularization for neural networks in JAX.

Pure, jit-compatible functions driven by explicit PRNG keys: the dropout family,
penalties and constraints, with thin Flax and Optax adapters (``jaxreg.linen``,
``jaxreg.nnx``, ``jaxreg.optax``) that the core never imports.
"""

from jaxreg._attention import dot_product_attention as dot_product_attention
from jaxreg._attention_ops import drop_head as drop_head
from jaxreg._attention_ops import drop_key as drop_key
from jaxreg._dropblock import drop_block as drop_block

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
from jaxreg._noise import gaussian_noise as gaussian_noise
from jaxreg._rate import needs_key as needs_key

# Learned regularization: concrete dropout, L0 hard-concrete gates
# isort: split
from jaxreg._concrete import concrete_dropout as concrete_dropout
from jaxreg._concrete import concrete_dropout_penalty as concrete_dropout_penalty
from jaxreg._l0 import hard_concrete_gate as hard_concrete_gate
from jaxreg._l0 import hard_concrete_gate_inference as hard_concrete_gate_inference
from jaxreg._l0 import l0_penalty as l0_penalty

# Penalties, constraints, proximal operators, filters
# isort: split
from jaxreg._constraints import max_norm as max_norm
from jaxreg._constraints import non_negative as non_negative
from jaxreg._constraints import unit_norm as unit_norm
from jaxreg._filters import by_path as by_path
from jaxreg._filters import kernels_only as kernels_only
from jaxreg._penalties import elastic_net_penalty as elastic_net_penalty
from jaxreg._penalties import group_lasso_penalty as group_lasso_penalty
from jaxreg._penalties import l1_penalty as l1_penalty
from jaxreg._penalties import l2_penalty as l2_penalty
from jaxreg._penalties import orthogonal_penalty as orthogonal_penalty
from jaxreg._prox import prox_elastic_net as prox_elastic_net
from jaxreg._prox import prox_group_lasso as prox_group_lasso
from jaxreg._prox import prox_l1 as prox_l1

__version__ = "0.1.0.dev0"

__all__ = [
    # Dropout family
    "alpha_dropout",
    "apply_mask",
    "bernoulli_mask",
    "drop_block",
    "drop_path",
    "drop_path_rates",
    "dropout",
    "gaussian_dropout",
    "gaussian_noise",
    "mc_predict",
    "needs_key",
    "scale_for_inference",
    "spatial_dropout",
    "variational_dropout",
    # Penalties, constraints, proximal operators, filters
    "by_path",
    "elastic_net_penalty",
    "group_lasso_penalty",
    "kernels_only",
    "l1_penalty",
    "l2_penalty",
    "max_norm",
    "non_negative",
    "orthogonal_penalty",
    "prox_elastic_net",
    "prox_group_lasso",
    "prox_l1",
    "unit_norm",
    # DropConnect
    "drop_connect",
    "drop_connect_dense",
    "drop_connect_inference",
    "drop_connect_tree",
    # Attention
    "dot_product_attention",
    "drop_head",
    "drop_key",
    # Learned regularization
    "concrete_dropout",
    "concrete_dropout_penalty",
    "hard_concrete_gate",
    "hard_concrete_gate_inference",
    "l0_penalty",
]
