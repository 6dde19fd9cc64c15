"""Barlow Twins (Zbontar et al. 2021, "Self-Supervised Learning via Redundancy Reduction").

Both views go through the same encoder f and projector g; the cross-correlation of the two
batch-standardised projections is driven towards the identity:

  C_ij = sum_b bs(z1)_bi bs(z2)_bj / B,    L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2.

The diagonal makes the views agree; the off-diagonal term decorrelates the dimensions, which is
what rules out collapse (a constant or low-rank embedding cannot reach C = I). C spans the global
batch: under a sharded `jax.jit` the batch axis covers every device, as the paper's all-reduce does.
"""

from __future__ import annotations

from flax import nnx

from jaxssl import losses
from jaxssl.methods.siamese import SiameseMethod
from jaxssl.models.heads import MLPHead


class BarlowTwins(SiameseMethod):
  """Barlow Twins as pure functions; see the module docstring for the equations."""

  HEADS = ("projector",)

  def _heads(self, num_features, dtype, rngs: nnx.Rngs):
    cfg = self.config.model
    # Paper: three linear layers of 8192, BN + ReLU after the first two.
    projector = MLPHead(
        num_features, cfg.projector_hidden_dim, cfg.projection_dim,
        num_hidden_layers=cfg.projector_hidden_layers, dtype=dtype, rngs=rngs,
    )
    return {"projector": projector}

  def objective(self, outputs):
    z1, z2 = (o["projection"] for o in outputs)
    cfg = self.config.barlow_twins
    invariance, redundancy = losses.barlow_twins_terms(z1, z2, eps=cfg.batch_norm_epsilon)
    loss = invariance + cfg.redundancy_weight * redundancy
    return loss, {"barlow_twins_loss": loss, "invariance": invariance, "redundancy": redundancy}
