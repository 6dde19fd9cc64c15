"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

Both views go through the same encoder f and projector g; a predictor h maps one view's
projection to the other's, whose gradient is stopped:

  L = D(h(z1), sg(z2)) / 2 + D(h(z2), sg(z1)) / 2,  D(p, z) = -cos(p, z),  z = g(f(x)).

There is no target network: the stop-gradient alone prevents collapse (the paper's figure 2),
helped by the predictor, whose learning rate the paper keeps fixed while the rest decays
(`config.optimizer.constant_lr_modules = ('predictor',)`, see `optim.module_learning_rates`).
"""

from __future__ import annotations

from flax import nnx

from jaxssl import losses
from jaxssl.methods.siamese import SiameseMethod
from jaxssl.models.heads import MLPHead


class SimSiam(SiameseMethod):
  """SimSiam as pure functions; see the module docstring for the equations."""

  HEADS = ("projector", "predictor")

  def _heads(self, num_features, dtype, rngs: nnx.Rngs):
    cfg = self.config.model
    # Paper 4.2: projector of 3 fc layers of 2048, BN on every one including the output (no ReLU
    # there); predictor 2048 -> 512 -> 2048 with BN + ReLU on the hidden layer only (a bottleneck).
    projector = MLPHead(
        num_features, cfg.projector_hidden_dim, cfg.projection_dim,
        num_hidden_layers=cfg.projector_hidden_layers, output_norm=True, dtype=dtype, rngs=rngs,
    )
    predictor = MLPHead(cfg.projection_dim, cfg.predictor_hidden_dim, cfg.projection_dim, dtype=dtype, rngs=rngs)
    return {"projector": projector, "predictor": predictor}

  def objective(self, outputs):
    predictions = tuple(o["prediction"] for o in outputs)
    projections = tuple(o["projection"] for o in outputs)
    loss = losses.negative_cosine_similarity(predictions, projections)
    return loss, {"simsiam_loss": loss}
