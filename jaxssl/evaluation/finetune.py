"""Fine-tuning a pretrained image (or video) backbone end to end, on all labels or a stratified fraction.

The `finetune` and `semisup` protocols of `jaxssl.evaluation.protocols` train the backbone and a
new linear head together: SGD with Nesterov momentum and a cosine schedule, weight decay on the
weights (not biases or norms), the standard random crop (reflect-padded) and horizontal flip,
made on the device. Two options a transfer study needs:

  layer_decay   layer-wise learning-rate decay (BEiT, MAE): block i of L gets the rate
                x decay^(L - i), the stem (or patch embedding) decay^(L + 1), the head the full
                rate; 1.0 turns it off. Applies to ResNets and ViTs alike (their `blocks`).
  batch_norm    'train': batch statistics, running averages updated (the usual fine-tuning);
                'frozen': the pretrained running statistics, never updated (small batches).

The run checkpoints every `checkpoint_every` steps under WORKDIR and resumes from there with the
same mini-batches and augmentations (both derive from the seed and the step).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxssl import checkpoint, parallel
from jaxssl.errors import UserError
from jaxssl.evaluation import evaluator
from jaxssl.transforms import augment

BATCH_NORM_MODES = ("train", "frozen")


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """Sorted indices of `fraction` of the examples of every class (at least one each), drawn with
  `seed`: the same labels and seed always give the same subset."""
  if not 0.0 < fraction <= 1.0:
    raise UserError(f"A label fraction of {fraction} is not in (0, 1]; use e.g. 0.01 or 0.1 (1% and 10% of the labels).")
  labels = np.asarray(labels)
  rng = np.random.default_rng([seed, 1])  # its own stream: the subset does not move with the training order
  chosen = []
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    chosen.append(rng.choice(members, size=max(1, int(round(fraction * len(members)))), replace=False))
  return np.sort(np.concatenate(chosen))


def layer_depths(params: dict) -> Any:
  """Per leaf of a backbone's params: 0 for what comes before the blocks, i + 1 for block i,
  L + 1 for what comes after (a ViT's final norm) and for the head."""
  blocks = params["backbone"].get("blocks", {})
  num_blocks = len(blocks)

  def depth(path, _):
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    if keys[0] != "backbone":
      return num_blocks + 1
    if keys[1] == "blocks":
      return int(keys[2]) + 1
    return num_blocks + 1 if keys[1] in ("norm", "final_norm") else 0

  return jax.tree_util.tree_map_with_path(depth, params), num_blocks


def layer_rate_multipliers(params: dict, layer_decay: float) -> Any:
  """decay^(L + 1 - depth) per leaf (`layer_depths`): 1 for the head, smaller towards the input."""
  depths, num_blocks = layer_depths(params)
  return jax.tree.map(lambda d: float(layer_decay) ** (num_blocks + 1 - d), depths)


def random_crop_flip(rng: jax.Array, images: jax.Array, padding: int) -> jax.Array:
  """[B, H, W, C] images, or [B, T, H, W, C] clips -> floats in [0, 1]: a random H x W crop of the
  reflect-padded image and a horizontal flip with probability 1/2, drawn per image (per clip: every
  frame gets its clip's crop and flip)."""
  images = augment.to_float_image(images)
  if images.ndim == 5:  # frames side by side in the channels, so one crop and flip covers them all
    batch, frames, height, width, channels = images.shape
    stacked = jnp.moveaxis(images, 1, 3).reshape(batch, height, width, frames * channels)
    cropped = random_crop_flip(rng, stacked, padding)
    return jnp.moveaxis(cropped.reshape(batch, height, width, frames, channels), 3, 1)
  batch, height, width, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="reflect")
  offset_key, flip_key = jax.random.split(rng)
  offsets = jax.random.randint(offset_key, (batch, 2), 0, 2 * padding + 1)
  flips = jax.random.bernoulli(flip_key, 0.5, (batch,))

  def one(image, offset, flip):
    crop = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))
    return jnp.where(flip, crop[:, ::-1], crop)

  return jax.vmap(one)(padded, offsets, flips)


def _weights_only(params: Any) -> Any:
  return jax.tree.map(lambda x: x.ndim > 1, params)


def make_optimizer(cfg: ml_collections.ConfigDict, params: dict, total_steps: int) -> optax.GradientTransformation:
  schedule = optax.cosine_decay_schedule(cfg.learning_rate, max(total_steps, 1))
  multipliers = layer_rate_multipliers(params, cfg.layer_decay)
  return optax.chain(
      optax.add_decayed_weights(cfg.weight_decay, mask=_weights_only),
      optax.sgd(schedule, momentum=0.9, nesterov=True),
      optax.stateless(lambda updates, _: jax.tree.map(lambda u, m: u * m, updates, multipliers)),
  )


def _identity(x: jax.Array) -> jax.Array:
  return x


def make_train_step(backbone, tx: optax.GradientTransformation, cfg: ml_collections.ConfigDict, backbone_input: Callable = _identity) -> Callable:
  """(state, images, labels, rng) -> (state, loss); `backbone` is a `functional.PureModule`, fed
  `backbone_input` of the normalised images (or clips)."""
  bn_train = cfg.batch_norm == "train"
  padding = max(1, cfg.crop_padding)

  def step(state, images, labels, rng):
    inputs = backbone_input(augment.normalize(random_crop_flip(jax.random.fold_in(rng, state["step"]), images, padding)))

    def loss_fn(params):
      features, stats = backbone(params["backbone"], state["batch_stats"], inputs, train=bn_train)
      logits = features.astype(jnp.float32) @ params["head"]["kernel"] + params["head"]["bias"]
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, stats

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new_state = {
        "step": state["step"] + 1,
        "params": optax.apply_updates(state["params"], updates),
        "opt_state": opt_state,
        "batch_stats": stats if bn_train else state["batch_stats"],
    }
    return new_state, loss

  return step


def batch_order(count: int, batch_size: int, total_steps: int, seed: int) -> np.ndarray:
  """[total_steps, batch] example indices: a fresh permutation each epoch, from the seed alone."""
  per_epoch = max(1, count // batch_size)
  epochs = -(-total_steps // per_epoch)
  rng = np.random.default_rng([seed, 2])
  order = np.concatenate([rng.permutation(count)[: per_epoch * batch_size] for _ in range(epochs)])
  return order.reshape(-1, batch_size)[:total_steps]


def sharded_batch_size(requested: int, count: int, mesh: jax.sharding.Mesh) -> int:
  """The largest batch of at most `requested` and `count` examples that splits over the mesh."""
  devices = mesh.devices.size
  batch_size = min(requested, count) // devices * devices
  if batch_size < devices:
    raise UserError(f"{count} training examples cannot fill a batch for {devices} devices; use more labelled data or fewer devices.")
  return batch_size


def run_steps(step_fn: Callable, state: dict, images: np.ndarray, labels: np.ndarray, order: np.ndarray, *, seed: int,
              mesh: jax.sharding.Mesh, checkpoint_dir: str | None, checkpoint_every: int, log: Callable[[str], None], name: str) -> dict:
  """Runs `step_fn(state, images, labels, rng) -> (state, loss)` over the mini-batches `order`
  [steps, batch], each split over the devices of `mesh`, the state replicated; checkpoints under
  `checkpoint_dir` and resumes there, with the same batches and augmentations (from seed and step)."""
  state = jax.device_put(state, parallel.replicated(mesh))
  saver = checkpoint.Checkpointer(checkpoint_dir, max_to_keep=1) if checkpoint_dir else None
  if saver is not None and saver.latest_step() is not None:
    _, state, _ = saver.restore_newest_good(checkpoint.abstract_like(state, jax.tree.map(lambda x: x.sharding, state)))
    log(f"Resuming {name} from step {int(state['step'])}")
  # No donation: an asynchronous save may still be reading the previous state.
  step_fn = jax.jit(step_fn)
  sharded = parallel.batch_sharded(mesh)
  rng = jax.random.key(seed)
  total_steps = len(order)
  every = max(1, total_steps // 10)
  for step in range(int(state["step"]), total_steps):
    batch = [parallel.from_replicated_host_array(np.asarray(x[order[step]]), sharded) for x in (images, labels.astype(np.int32))]
    state, loss = step_fn(state, *batch, rng)
    done = step + 1
    if done % every == 0 or done == total_steps:
      log(f"  {name} step {done}/{total_steps} loss={float(loss):.4g}")
    if saver is not None and (done % checkpoint_every == 0 or done == total_steps):
      saver.save(done, state, {"step": done})
  if saver is not None:
    saver.wait()
    saver.close()
  return state


def finetune(backbone, params: dict, batch_stats: dict, images: np.ndarray, labels: np.ndarray, *, num_classes: int,
             cfg: ml_collections.ConfigDict, seed: int, mesh: jax.sharding.Mesh, checkpoint_dir: str | None = None,
             log: Callable[[str], None] = print, backbone_input: Callable = _identity) -> tuple[dict, dict]:
  """Fine-tunes (backbone params, a zero-initialised head) on (images or clips, labels), each batch
  split over the devices of `mesh`; returns (params {'backbone', 'head'}, batch stats). Resumes
  from `checkpoint_dir` if it holds a step."""
  if cfg.batch_norm not in BATCH_NORM_MODES:
    raise UserError(f"config.finetune.batch_norm is '{cfg.batch_norm}'; choose one of {BATCH_NORM_MODES}.")
  batch_size = sharded_batch_size(cfg.batch_size, len(images), mesh)
  total_steps = max(1, cfg.epochs * max(1, len(images) // batch_size))
  dim = jax.eval_shape(lambda: backbone(params, batch_stats, backbone_input(jnp.zeros((1,) + images.shape[1:], jnp.float32)), train=False)[0]).shape[-1]
  params = {"backbone": params, "head": {"kernel": jnp.zeros((dim, num_classes)), "bias": jnp.zeros((num_classes,))}}
  tx = make_optimizer(cfg, params, total_steps)
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params), "batch_stats": batch_stats}
  state = run_steps(
      make_train_step(backbone, tx, cfg, backbone_input), state, images, labels, batch_order(len(images), batch_size, total_steps, seed),
      seed=seed, mesh=mesh, checkpoint_dir=checkpoint_dir, checkpoint_every=cfg.checkpoint_every, log=log, name="fine-tuning",
  )
  return state["params"], state["batch_stats"]


def top1(backbone, params: dict, batch_stats: dict, images: np.ndarray, labels: np.ndarray, batch_size: int,
         mesh: jax.sharding.Mesh, backbone_input: Callable = _identity) -> float:
  """Top-1 (%) of a fine-tuned (backbone, head) on centred images (or clips), BN in eval mode,
  in chunks split over the devices of `mesh`."""
  def logits(p, stats, x, train):
    features, _ = backbone(p["backbone"], stats, backbone_input(augment.normalize(x)), train=train)
    return features.astype(jnp.float32) @ p["head"]["kernel"] + p["head"]["bias"]

  scores = evaluator.FeatureExtractor(None, mesh, batch_size, logits)(params, batch_stats, images)
  return float(100.0 * np.mean(np.argmax(scores, axis=-1) == np.asarray(labels)))


def subset_path(workdir: str, fraction: float) -> str:
  return os.path.join(workdir, "eval", f"semisup_{fraction * 100:g}pct_indices.txt")
