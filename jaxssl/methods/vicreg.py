"""VICReg (Bardes, Ponce, LeCun 2022, "Variance-Invariance-Covariance Regularization").

Both views go through the same encoder f and expander (projector) g; three terms on the
projections z1, z2 (see `losses.vicreg_terms`):

  L = lambda s(Z1, Z2) + mu [v(Z1) + v(Z2)] / 2 + nu [c(Z1) + c(Z2)],  (lambda, mu, nu) = (25, 25, 1)

s pulls the views together; the variance hinge keeps every dimension's std at 1 or above, which
is what prevents collapse; the covariance term decorrelates dimensions. v and c span the global
batch (the official code all-gathers for them; here the batch axis spans every device).
"""

from __future__ import annotations

from flax import nnx

from jaxssl import losses
from jaxssl.methods.siamese import SiameseMethod
from jaxssl.models.heads import MLPHead


class VICReg(SiameseMethod):
  """VICReg as pure functions; see the module docstring for the equations."""

  HEADS = ("projector",)

  def _heads(self, num_features, dtype, rngs: nnx.Rngs):
    cfg = self.config.model
    # Paper: an expander of three linear layers of 8192, BN + ReLU after the first two.
    projector = MLPHead(
        num_features, cfg.projector_hidden_dim, cfg.projection_dim,
        num_hidden_layers=cfg.projector_hidden_layers, dtype=dtype, rngs=rngs,
    )
    return {"projector": projector}

  def objective(self, outputs):
    z1, z2 = (o["projection"] for o in outputs)
    cfg = self.config.vicreg
    invariance, variance, covariance = losses.vicreg_terms(z1, z2, target_std=cfg.target_std, eps=cfg.variance_epsilon)
    loss = cfg.invariance_weight * invariance + cfg.variance_weight * variance + cfg.covariance_weight * covariance
    return loss, {"vicreg_loss": loss, "invariance": invariance, "variance": variance, "covariance": covariance}
