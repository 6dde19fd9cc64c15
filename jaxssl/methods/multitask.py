"""Multi-task self-supervised learning (Doersch & Zisserman 2017, "Multi-task Self-Supervised
Visual Learning"): several pretext tasks train one trunk, each through its own head, and their
losses add up with the weights of `config.multitask.weights`.

Tasks (`config.multitask.tasks`), each built from this library's single-task pieces:

* 'relative_position': the 3 x 3 patches of `jaxssl.methods.relative_position` (gaps, jitter,
  per-patch normalisation, colour dropping), centre-neighbour pairs, an 8-way head;
* 'colorization': grey input, Larsson et al.'s hue and chroma histograms per cell
  (`jaxssl.methods.colorization`; the paper uses Zhang et al.'s head, which needs a prior over
  ab bins counted beside the trunk: the histogram head needs none);
* 'exemplar': a parametric softmax over one class per training image
  (`jaxssl.methods.exemplar`), its rows split over devices;
* 'motion_segmentation': which parts of a still video frame move (Pathak et al. 2017, the
  paper's fourth task). The still and a frame `motion_gap` later come from a second, video
  dataset (`multitask.motion_data`, the built-in moving shapes by default) beside each image
  record; the pixels whose colour changes by more than `motion_threshold` between them are the
  moving ones, and a 1 x 1 convolution on the trunk's feature map predicts, for each cell of a
  `motion_cells` grid, the fraction of its pixels that move (sigmoid cross-entropy). The paper
  segments motion with an unsupervised video segmenter; frame differences are that segmenter for
  a static camera, as in the built-in videos.

The paper's two remedies for tasks that pull the trunk apart are options:

* harmonisation (`multitask.harmonize`): every task sees grey input, so the colour that
  colorization must not see is absent for all, and the trunk meets one kind of image;
* lasso layer mixing (`multitask.lasso` > 0): each head reads its own learned linear
  combination of the outputs of the trunk's last `multitask.mixing_blocks` blocks (which share a
  shape), and the L1 norm of the mixing weights, times `lasso`, joins the loss, so each task
  picks few layers. With `lasso` 0 every head reads the last block.

Each task's trunk pass normalises with its own batch's statistics, as any training pass does, but
the passes see different images (11 px patches normalised one by one, grey images, augmented
whole images, frames of another dataset). Threading the running BatchNorm averages through all of
them would give evaluation a blend of those four kinds of input while it embeds whole images, so
only the pass of `multitask.statistics_task` (by default the exemplar task, whose input is the
whole augmented image that evaluation's is closest to) moves them; '' threads them through every
pass.

"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from jaxssl import inputs, losses, models
from jaxssl.errors import UserError
from jaxssl.methods import dictionaries
from jaxssl.methods.base import TrainState
from jaxssl.methods.colorization import LARSSON_BINS, cell_centres, larsson_loss
from jaxssl.methods.common import linear_probe_loss
from jaxssl.methods.moco import ProjectionHead
from jaxssl.methods.relative_position import PairHead
from jaxssl.models import functional
from jaxssl.transforms import augment, pretext

TASKS = ("relative_position", "colorization", "exemplar", "motion_segmentation")


def to_grey(images: jax.Array) -> jax.Array:
  """RGB -> the mean of the channels on all three (harmonised input)."""
  return jnp.broadcast_to(images.mean(axis=-1, keepdims=True), images.shape)


def motion_targets(still: jax.Array, later: jax.Array, cells: int, threshold: float) -> jax.Array:
  """Per cell of a `cells` x `cells` grid, the fraction of pixels that move: whose colour (in
  [0, 1]) changes by more than `threshold` in some channel between `still` and `later` [B, S, S, 3]."""
  moving = (jnp.abs(later - still).max(axis=-1) > threshold).astype(jnp.float32)
  batch, size = moving.shape[:2]
  if size % cells:
    raise UserError(f"config.multitask.motion_cells={cells} does not divide the {size} px frames; choose a divisor of {size}.")
  return moving.reshape(batch, cells, size // cells, cells, size // cells).mean(axis=(2, 4))


def upsample_to(logits: jax.Array, cells: int) -> jax.Array:
  """A head's map [B, h, w, C] repeated to [B, cells, cells, C] (h and w divide `cells`)."""
  return jnp.repeat(jnp.repeat(logits, cells // logits.shape[1], axis=1), cells // logits.shape[2], axis=2)


def mix(block_outputs: list[jax.Array], weights: jax.Array | None) -> jax.Array:
  """A head's input: its weighted sum of the blocks' outputs, or the last block's without mixing."""
  if weights is None:
    return block_outputs[-1]
  return sum(w * out for w, out in zip(weights, block_outputs))


class MultiTask:
  """Multi-task SSL as pure functions; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0, num_train_examples: int = 0):
    self.config = config
    self.num_classes = num_classes
    cfg = config.multitask
    self.tasks = tuple(cfg.tasks)
    unknown = [t for t in self.tasks if t not in TASKS]
    if unknown or not self.tasks:
      raise UserError(f"config.multitask.tasks={list(self.tasks)}: name one or more of {TASKS}.")
    if cfg.statistics_task and cfg.statistics_task not in self.tasks:
      raise UserError(f"config.multitask.statistics_task={cfg.statistics_task!r} is not among config.multitask.tasks={list(self.tasks)}; name one of them, or '' to let every pass move the BatchNorm statistics.")
    missing = [t for t in self.tasks if t not in cfg.weights]
    if missing:
      raise UserError(f"config.multitask.weights has no weight for {missing}; give every task in config.multitask.tasks one.")
    self.num_exemplars = dictionaries.memory_bank_size(0, num_train_examples) if "exemplar" in self.tasks else 0
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    if len(self.view_specs) != 2:
      raise UserError(f"config.augment.views has {len(self.view_specs)} views; multi-task needs 2 (plain for the patches and colours, augmented for exemplar).")
    if "motion_segmentation" in self.tasks:
      # The frames ride along with the image records; images stay what evaluation embeds.
      self.host_inputs = inputs.ImagesWithFramePairs(cfg.motion_data, size=int(config.augment.views[0].size), gap=cfg.motion_gap)
    # Heads read a mix of the last `mixing_blocks` blocks with the lasso on, else the last block.
    self.mixed_blocks = max(1, cfg.mixing_blocks) if cfg.lasso > 0 else 1
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.modules = {name: functional.split_module(m)[0] for name, m in abstract.items()}

  def _networks(self, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
    cfg, model = self.config.multitask, self.config.model
    backbone = models.make_backbone(model, rngs)
    width = backbone.num_features
    networks = {"backbone": backbone}
    if "relative_position" in self.tasks:
      networks["relative_position_head"] = PairHead(width, cfg.hidden_dim, rotation=False, rngs=rngs)
    if "colorization" in self.tasks:
      networks["colorization_head"] = nnx.Conv(width, 2 * LARSSON_BINS, kernel_size=(1, 1), rngs=rngs)
    if "motion_segmentation" in self.tasks:
      networks["motion_head"] = nnx.Conv(width, 1, kernel_size=(1, 1), rngs=rngs)
    if "exemplar" in self.tasks:
      networks["exemplar_head"] = ProjectionHead(width, cfg.hidden_dim, model.projection_dim, batch_norm=True, rngs=rngs)
    networks["probe"] = nnx.Linear(width, max(self.num_classes, 1), rngs=rngs)
    return networks

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    network_rng, classifier_rng = jax.random.split(rng)
    split = {name: functional.split_module(m) for name, m in self._networks(nnx.Rngs(network_rng)).items()}
    params = {name: p for name, (_, p, _) in split.items()}
    stats = {name: s for name, (_, _, s) in split.items() if s}
    if not self.num_classes:
      del params["probe"]
    cfg = self.config.multitask
    if cfg.lasso > 0:
      # Every head starts reading the last block only.
      start = jnp.zeros((cfg.mixing_blocks,), jnp.float32).at[-1].set(1.0)
      params["mixing"] = {task: start for task in self.tasks}
    if "exemplar" in self.tasks:
      dim = self.config.model.projection_dim
      params["exemplar_classifier"] = {
          "weight": jax.random.normal(classifier_rng, (self.num_exemplars, dim), jnp.float32) / jnp.sqrt(dim),
          "bias": jnp.zeros((self.num_exemplars,), jnp.float32),
      }
    return params, {"batch_stats": stats}

  row_sharded_params = (("exemplar_classifier",),)

  @classmethod
  def backbone_input_fn(cls, config: ml_collections.ConfigDict):
    """Normalised images -> the trunk's input: grey under the paper's input harmonisation, in
    training, evaluation and `jaxssl.evaluation.pretrained`."""
    return to_grey if config.multitask.harmonize else (lambda images: images)

  def _input(self, images: jax.Array) -> jax.Array:
    return self.backbone_input_fn(self.config)(images)

  def _trunk(self, params, stats, images):
    """(block outputs, new trunk stats): one trunk pass in training mode."""
    return self.modules["backbone"](params["backbone"], stats, images, train=True, method="block_outputs", last=self.mixed_blocks)

  def _mixing(self, params, task):
    return params["mixing"][task] if "mixing" in params else None

  def loss(self, params, extra, batch, rng, step):
    del step
    cfg = self.config.multitask
    plain_rng, augmented_rng, patch_rng = jax.random.split(rng, 3)
    plain = augment.augment_images(plain_rng, batch["view0"], self.view_specs[0])  # [0, 1]
    head_stats = dict(extra["batch_stats"])
    trunk_stats = head_stats.pop("backbone")
    step_start_stats = trunk_stats
    per_task, metrics = {}, {}
    pooled_for_probe = None

    def trunk(task, images):
      """One trunk pass for `task`; only the statistics task's pass moves the running BN averages
      (see the module docstring), unless none is named."""
      nonlocal trunk_stats
      if not cfg.statistics_task:
        blocks, trunk_stats = self._trunk(params, trunk_stats, images)
        return blocks
      blocks, stats = self._trunk(params, step_start_stats, images)
      if task == cfg.statistics_task:
        trunk_stats = stats
      return blocks

    if "relative_position" in self.tasks:
      rp = self.config.relative_position
      patches = pretext.puzzle_tiles(patch_rng, self._input(plain), rp.patch_size)
      flat = patches.reshape(-1, *patches.shape[2:])
      if rp.colour == "drop" and not cfg.harmonize:
        flat = pretext.drop_colour(jax.random.fold_in(patch_rng, 1), flat)
      flat = pretext.normalize_each_tile(flat, min_std=0.02)
      blocks = trunk("relative_position", flat)
      features = mix(blocks, self._mixing(params, "relative_position")).mean(axis=(1, 2))
      batch_size, num_tiles = patches.shape[:2]
      centres, neighbours, labels = pretext.centre_neighbour_pairs(features.reshape(batch_size, num_tiles, -1))
      pairs = jnp.concatenate([jnp.broadcast_to(centres[:, None], neighbours.shape), neighbours], axis=-1)
      (logits, _), head_stats["relative_position_head"] = self.modules["relative_position_head"](
          params["relative_position_head"], head_stats["relative_position_head"], pairs.reshape(-1, pairs.shape[-1]), train=True)
      labels = labels.reshape(-1)
      per_task["relative_position"] = losses.softmax_cross_entropy(logits, labels)
      metrics["relative_position_top1"] = jnp.mean(logits.argmax(-1) == labels)

    if "colorization" in self.tasks:
      blocks = trunk("colorization", 2.0 * to_grey(plain) - 1.0)  # colour is the target: always grey
      feature_map = mix(blocks, self._mixing(params, "colorization"))
      logits, _ = self.modules["colorization_head"](params["colorization_head"], {}, feature_map, train=True)
      cells = self.config.multitask.colour_cells
      per_task["colorization"] = larsson_loss(upsample_to(logits, cells), cell_centres(plain, cells))
      pooled_for_probe = blocks[-1].mean(axis=(1, 2))

    if "exemplar" in self.tasks:
      indices = dictionaries.check_indices(batch, "Multi-task's exemplar task")
      augmented = augment.normalize(augment.augment_images(augmented_rng, batch["view1"], self.view_specs[1]))
      blocks = trunk("exemplar", self._input(augmented))
      pooled = mix(blocks, self._mixing(params, "exemplar")).mean(axis=(1, 2))
      projection, head_stats["exemplar_head"] = self.modules["exemplar_head"](params["exemplar_head"], head_stats["exemplar_head"], pooled, train=True)
      classifier = params["exemplar_classifier"]
      logits = projection.astype(jnp.float32) @ classifier["weight"].T + classifier["bias"]
      per_task["exemplar"] = losses.softmax_cross_entropy(logits, indices)
      metrics["exemplar_top1"] = jnp.mean(logits.argmax(-1) == indices)
      pooled_for_probe = blocks[-1].mean(axis=(1, 2))

    if "motion_segmentation" in self.tasks:
      frames = augment.to_float_image(batch["frame_pair"])  # [B, 2, S, S, 3] in [0, 1]
      still, later = frames[:, 0], frames[:, 1]
      blocks = trunk("motion_segmentation", self._input(augment.normalize(still)))
      logits, _ = self.modules["motion_head"](params["motion_head"], {}, mix(blocks, self._mixing(params, "motion_segmentation")), train=True)
      targets = motion_targets(still, later, cfg.motion_cells, cfg.motion_threshold)
      logits = upsample_to(logits, cfg.motion_cells)[..., 0].astype(jnp.float32)
      per_task["motion_segmentation"] = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))
      metrics["moving_fraction"] = jnp.mean(targets)

    total = sum(cfg.weights[task] * value for task, value in per_task.items())
    metrics.update({f"{task}_loss": value for task, value in per_task.items()})
    if "mixing" in params:
      penalty = sum(jnp.sum(jnp.abs(w)) for w in params["mixing"].values())
      total = total + cfg.lasso * penalty
      metrics["mixing_l1"] = penalty
    if self.num_classes:
      if pooled_for_probe is None:  # relative position alone: the probe reads whole images
        pooled_for_probe = self.embed(params, {"batch_stats": {"backbone": trunk_stats}}, augment.normalize(plain), train=False)
      probe_loss, probe_accuracy = linear_probe_loss(self.probe_module, params["probe"], pooled_for_probe, batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    return total, {"batch_stats": {"backbone": trunk_stats, **head_stats}, "metrics": metrics}

  @property
  def probe_module(self):
    return self.modules["probe"]

  def after_update(self, state: TrainState, aux: dict) -> dict:
    del state
    return {"batch_stats": aux["batch_stats"]}

  def embed(self, params, extra, images, *, train: bool = False):
    """The backbone's pooled features of `images` (normalised RGB), harmonised as in training."""
    features, _ = self.modules["backbone"](params["backbone"], extra["batch_stats"]["backbone"], self._input(images), train=train)
    return features
