"""DINO: self-DIstillation with NO labels (Caron et al. 2021).

A student g_s sees every crop (2 global + V local); an EMA teacher g_t sees the global crops only.
The student on crop v predicts the teacher's distribution on every other global crop i:

  L = mean_{i in global} mean_{v != i} -sum_k P_t(x_i)_k log P_s(x_v)_k,
  P_t = softmax((g_t(x) - c) / T_t),  P_s = softmax(g_s(x) / T_s),  T_s = 0.1, T_t: 0.04 -> 0.07,
  c <- m c + (1 - m) mean_{global batch, global crops} g_t(x),  m = 0.9,
  teacher <- lambda teacher + (1 - lambda) student,  lambda: 0.996 -> 1 (cosine).

Centring keeps one dimension from dominating, sharpening (low T_t) keeps the output from going
uniform; the teacher's entropy and its KL to the batch's mean distribution are logged to show
which of the two collapses (if any) is under way. The last layer is frozen in the first epoch.
`dino.teacher_centering='sinkhorn'` replaces centring by DINOv2's Sinkhorn-Knopp step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import losses, models, schedules
from jaxssl.transforms import augment
from jaxssl.methods import multicrop
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import linear_probe_loss
from jaxssl.models import functional
from jaxssl.models.heads import DINOHead, WeightNormLinear

_TEACHER_PARTS = ("backbone", "head", "last_layer")


def _entropy(probs: jax.Array) -> jax.Array:
  return -jnp.sum(probs * jnp.log(jnp.maximum(probs, 1e-30)), axis=-1)


def collapse_statistics(teacher_probs: jax.Array, student_log_probs: jax.Array) -> dict[str, jax.Array]:
  """The two collapse signals of the DINO paper's fig. 7, from [N, K] teacher probabilities.

  teacher_entropy: mean H(P_t); log K when the outputs go uniform, 0 when one-hot.
  teacher_kl_to_mean: mean KL(P_t(x) || mean_x P_t(x)); 0 whenever every image gets the same
    distribution (either collapse), up to H(mean P_t) when outputs are confident and diverse.
  teacher_student_kl: mean KL(P_t(x) || P_s(x)) on the same crop; 0 when both collapsed alike.
  """
  entropy = _entropy(teacher_probs)
  mean_probs = jnp.mean(teacher_probs, axis=0)
  log_teacher = jnp.log(jnp.maximum(teacher_probs, 1e-30))
  kl_to_mean = jnp.sum(teacher_probs * (log_teacher - jnp.log(jnp.maximum(mean_probs, 1e-30))), axis=-1)
  teacher_student = jnp.sum(teacher_probs * (log_teacher - student_log_probs), axis=-1)
  return {
      "teacher_entropy": jnp.mean(entropy),
      "teacher_kl_to_mean": jnp.mean(kl_to_mean),
      "teacher_student_kl": jnp.mean(teacher_student),
  }


def updated_center(center: jax.Array, teacher_logits: jax.Array, momentum: float) -> jax.Array:
  """c <- m c + (1 - m) mean over every global-crop teacher output of the global batch."""
  batch_center = jnp.mean(teacher_logits.reshape(-1, teacher_logits.shape[-1]), axis=0)
  return momentum * center + (1.0 - momentum) * batch_center.astype(center.dtype)


class DINO:
  """DINO as pure functions; see the module docstring for the equations."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    self.local_spec = multicrop.local_augment_spec(config.augment)
    if len(self.view_specs) < 2:
      raise ValueError(f"DINO's teacher needs at least 2 global crops; config.augment.views has {len(self.view_specs)}, set 2.")
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.head, self.last_layer, self.probe = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    """(backbone, head, last layer, probe): the paper's 3-layer 2048-d MLP, 256-d bottleneck, K outputs."""
    cfg, dino = self.config.model, self.config.dino
    backbone = models.make_backbone(cfg, rngs)
    head = DINOHead(
        backbone.num_features,
        dino.hidden_dim,
        dino.bottleneck_dim,
        num_layers=dino.head_layers,
        use_batch_norm=dino.use_bn_in_head,
        dtype=models.compute_dtype(cfg.dtype),
        rngs=rngs,
    )
    last_layer = WeightNormLinear(dino.bottleneck_dim, dino.out_dim, learn_scale=not dino.norm_last_layer, rngs=rngs)
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, head, last_layer, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    names = ("backbone", "head", "last_layer", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(rng))))
    params, stats = dict(zip(names, params)), dict(zip(names, stats))
    del stats["last_layer"], stats["probe"]  # no batch statistics
    if not self.num_classes:
      del params["probe"]
    copy = lambda tree: jax.tree.map(jnp.array, tree)
    extra = {
        "batch_stats": stats,
        # The teacher starts as an exact copy of the student (no gradient ever reaches it).
        "target_params": {k: copy(params[k]) for k in _TEACHER_PARTS},
        "target_batch_stats": {k: copy(stats[k]) for k in ("backbone", "head")},
        "center": jnp.zeros((self.config.dino.out_dim,), jnp.float32),
    }
    return params, extra

  def _logits(self, params, stats, groups):
    """Head outputs [N, K] of every crop in `groups`, with the updated batch statistics."""
    features, backbone_stats = multicrop.backbone_features(self.backbone, params["backbone"], stats["backbone"], groups)
    bottleneck, head_stats = self.head(params["head"], stats["head"], features, train=True)
    logits, _ = self.last_layer(params["last_layer"], {}, losses.l2_normalize(bottleneck), train=True)
    return features, logits, {"backbone": backbone_stats, "head": head_stats}

  def teacher_temperature(self, step: jax.Array) -> jax.Array:
    dino = self.config.dino
    return schedules.linear_warmup_then_constant(
        step, start_value=dino.warmup_teacher_temperature, final_value=dino.teacher_temperature,
        warmup_steps=dino.teacher_temperature_warmup_steps,
    )

  def teacher_momentum(self, step: jax.Array) -> jax.Array:
    return schedules.cosine_increase(step, base_value=self.config.dino.base_teacher_momentum, total_steps=self.config.total_steps)

  def loss(self, params, extra, batch, rng, step):
    dino = self.config.dino
    num_global, batch_size = len(self.view_specs), batch["view0"].shape[0]
    groups = multicrop.augmented_crop_groups(rng, batch, self.view_specs, self.local_spec)
    features, student_logits, stats = self._logits(params, extra["batch_stats"], groups)
    # The teacher sees the global crops only.
    _, teacher_logits, target_stats = self._logits(extra["target_params"], extra["target_batch_stats"], groups[:1])
    student_logits = multicrop.per_crop(student_logits, batch_size, num_global)  # [C, B, K]
    teacher_logits = jax.lax.stop_gradient(multicrop.per_crop(teacher_logits, batch_size, num_global))  # [G, B, K]
    teacher_temperature = self.teacher_temperature(step)
    teacher_probs = losses.dino_teacher_probs(
        teacher_logits, extra["center"], teacher_temperature, dino.teacher_centering, dino.sinkhorn_iterations
    )
    loss = losses.swapped_cross_entropy(teacher_probs, student_logits, dino.student_temperature)

    student_log_probs = jax.nn.log_softmax(jax.lax.stop_gradient(student_logits[:num_global]) / dino.student_temperature, axis=-1)
    metrics = {
        "dino_loss": loss,
        "teacher_temperature": teacher_temperature,
        **collapse_statistics(teacher_probs.reshape(-1, teacher_probs.shape[-1]), student_log_probs.reshape(-1, teacher_probs.shape[-1])),
    }
    total = loss
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], features[:batch_size], batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    aux = {
        "batch_stats": stats,
        "target_batch_stats": target_stats,
        # Centred with the centre of the previous step, then updated (the reference's order). With
        # Sinkhorn targets the centre is unused but still tracked, so switching keeps the state.
        "center": updated_center(extra["center"], teacher_logits, dino.center_momentum),
        "metrics": metrics,
    }
    return total, aux

  def after_update(self, state: TrainState, aux: dict) -> dict:
    # EMA of the student the optimizer has just updated, with the momentum of the step taken.
    momentum = self.teacher_momentum(state.step - 1)
    student = {k: state.params[k] for k in _TEACHER_PARTS}
    teacher = jax.tree.map(lambda t, s: momentum * t + (1.0 - momentum) * s, state.extra["target_params"], student)
    return {
        "batch_stats": aux["batch_stats"],
        "target_params": teacher,
        "target_batch_stats": aux["target_batch_stats"],
        "center": aux["center"],
    }

  def embed(self, params, extra, images, *, train: bool = False):
    """Features of the teacher's backbone, which the paper evaluates (it outperforms the student)."""
    del params
    features, _ = self.backbone(extra["target_params"]["backbone"], extra["target_batch_stats"]["backbone"], images, train=train)
    return features

  def export_backbone(self, state: TrainState):
    """(params, batch statistics) of the backbone to export: the teacher's, as evaluated."""
    return state.extra["target_params"]["backbone"], state.extra["target_batch_stats"]["backbone"]
