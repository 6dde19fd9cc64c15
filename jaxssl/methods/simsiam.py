"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

Both views go through the same encoder f and projector g; a predictor h maps one view's
projection to the other's, whose gradient is stopped:

  L = D(h(z1), sg(z2)) / 2 + D(h(z2), sg(z1)) / 2,  D(p, z) = -cos(p, z),  z = g(f(x)).

There is no target network: the stop-gradient alone prevents collapse (the paper's figure 2),
helped by the predictor, whose learning rate the paper keeps fixed while the rest decays
(`config.optimizer.constant_lr_modules = ('predictor',)`, see `optim.module_learning_rates`).

`config.simsiam.predictor = 'direct'` replaces the learned predictor by DirectPred's (Tian, Chen &
Ganguli 2021): a linear map set at every step from the eigendecomposition of a running
correlation matrix of the projections (`losses.direct_predictor`), which keeps weak directions
of the embedding growing where a learned predictor lets one direction take over.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import losses
from jaxssl.methods.siamese import SiameseMethod
from jaxssl.models.heads import MLPHead


class SimSiam(SiameseMethod):
  """SimSiam as pure functions; see the module docstring for the equations."""

  PREDICTORS = ("learned", "direct")
  # Multi-crop's local crops predict both global crops' projections (not in the paper; the
  # built-in-data presets use two, as SwAV's and DINO's do).
  USES_LOCAL_VIEWS = True

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    options = config.get("simsiam", None) or {}
    self.predictor_kind = options.get("predictor", "learned")
    if self.predictor_kind not in self.PREDICTORS:
      raise ValueError(f"config.simsiam.predictor is '{self.predictor_kind}'; choose one of {self.PREDICTORS}.")
    self.direct_rho = options.get("direct_rho", 0.3)
    self.direct_eps = options.get("direct_eps", 0.01)
    self.HEADS = ("projector", "predictor") if self.predictor_kind == "learned" else ("projector",)
    super().__init__(config, num_classes)

  def initial_state(self):
    if self.predictor_kind == "learned":
      return {}
    dim = self.config.model.projection_dim
    return {"projection_correlation": jnp.zeros((dim, dim), jnp.float32)}

  def complete_outputs(self, outputs, state):
    if self.predictor_kind == "learned":
      return outputs, state
    # The correlation is over both views of the global batch; with multi-crop, over the global
    # crops only: their projections are the targets.
    predictor, correlation = losses.running_direct_predictor(
        state["projection_correlation"], [o["projection"] for o in outputs[:2]], self.direct_rho, self.direct_eps
    )
    outputs = tuple({**o, "prediction": o["projection"] @ predictor} for o in outputs)
    return outputs, {"projection_correlation": correlation}

  def _heads(self, num_features, dtype, rngs: nnx.Rngs):
    cfg = self.config.model
    # Paper 4.2: projector of 3 fc layers of 2048, BN on every one including the output (no ReLU
    # there); predictor 2048 -> 512 -> 2048 with BN + ReLU on the hidden layer only (a bottleneck).
    projector = MLPHead(
        num_features, cfg.projector_hidden_dim, cfg.projection_dim,
        num_hidden_layers=cfg.projector_hidden_layers, output_norm=True, dtype=dtype, rngs=rngs,
    )
    if self.predictor_kind == "direct":
      return {"projector": projector}
    predictor = MLPHead(cfg.projection_dim, cfg.predictor_hidden_dim, cfg.projection_dim, dtype=dtype, rngs=rngs)
    return {"projector": projector, "predictor": predictor}

  def objective(self, outputs):
    predictions = tuple(o["prediction"] for o in outputs)
    projections = tuple(o["projection"] for o in outputs)
    if len(outputs) == 2:
      loss = losses.negative_cosine_similarity(predictions, projections)
    else:
      loss = losses.multicrop_negative_cosine_similarity(predictions, projections, num_targets=2)
    return loss, {"simsiam_loss": loss}
