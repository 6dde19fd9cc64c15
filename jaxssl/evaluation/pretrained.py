"""A backbone exported by a finished run, made ready for the evaluation protocols.

An image method exports `config.model.backbone` (a ResNet or ViT of images). A video method
(BraVe, GDT, VideoMoCo) exports its video backbone, which reads clips of the pretraining's narrow
view, maybe as frame differences; the method itself says how (`make_backbone`,
`backbone_input`), so a protocol rebuilds the method from the stored config instead of knowing
each one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxssl import checkpoint, export, inputs, methods, models
from jaxssl.data import pipeline, video
from jaxssl.evaluation import evaluator
from jaxssl.models import functional
from jaxssl.transforms import augment


def _identity(x: jax.Array) -> jax.Array:
  return x


def backbone_spec(pretraining: ml_collections.ConfigDict) -> tuple[Callable[[nnx.Rngs], nnx.Module], Callable, inputs.ClipViewSpec | None]:
  """(rngs -> the exported backbone's NNX module, normalised inputs -> its input, the clip view it
  reads or None for images) for a run configured by `pretraining`."""
  name = pretraining.get("method", "")
  if methods.is_video_method(name):
    method = methods.make_method(pretraining)
    return method.make_backbone, method.backbone_input, method.host_inputs.narrow
  # Image methods whose backbone reads something other than the normalised RGB images (grey,
  # lightness, per-image normalisation) say so with `backbone_input_fn(config)`.
  input_fn = getattr(methods.method_class(name), "backbone_input_fn", None) if name in methods.REGISTRY else None
  return (lambda rngs: models.make_backbone(pretraining.model, rngs)), (input_fn(pretraining) if input_fn else _identity), None


def _as_config(value: Any) -> Any:
  """A config read back from JSON as a ConfigDict, dicts inside lists too (BraVe's broad views)."""
  if isinstance(value, dict):
    return ml_collections.ConfigDict({k: _as_config(v) for k, v in value.items()})
  if isinstance(value, list):
    return [_as_config(v) for v in value]
  return value


def _as_state(tree: Any) -> Any:
  """A restored params / statistics tree as NNX's state (int block indices, device arrays)."""
  return jax.tree.map(jnp.asarray, export.as_numpy_tree(tree))


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """An exported backbone as a pure module with its weights, and what it reads."""

  backbone: functional.PureModule
  params: dict
  batch_stats: dict
  pretraining: ml_collections.ConfigDict
  clip_view: inputs.ClipViewSpec | None  # None: an image backbone
  backbone_input: Callable[[jax.Array], jax.Array]  # normalised images / clips -> backbone input

  @property
  def input_key(self) -> str:
    """The key of the arrays `load_arrays` returns: 'image' or 'clip'."""
    return "image" if self.clip_view is None else "clip"

  def load_arrays(self, source, image_size: int, max_examples: int | None) -> dict[str, np.ndarray]:
    """Evaluation arrays of `source`: centre-resized images, or the narrow view's centred clips."""
    if self.clip_view is None:
      return pipeline.load_eval_arrays(source, image_size, max_examples)
    return video.load_clip_eval_arrays(source, self.clip_view, max_examples)

  def embed(self, params, batch_stats, inputs: jax.Array, *, train: bool = False) -> jax.Array:
    """Features [B, D] (float32) of normalised images or clips, through `backbone_input`."""
    features, _ = self.backbone(params, batch_stats, self.backbone_input(inputs), train=train)
    return features.astype(jnp.float32)

  def features(self, arrays: np.ndarray, batch_size: int, mesh: jax.sharding.Mesh) -> np.ndarray:
    """Frozen features [N, D] of uint8 images or clips, BatchNorm on its running statistics, in
    chunks of `batch_size` split over the devices of `mesh`."""
    extract = evaluator.FeatureExtractor(None, mesh, batch_size, lambda p, s, x, train: self.embed(p, s, augment.normalize(x), train=train))
    return extract(self.params, self.batch_stats, arrays)


def load(directory: str) -> Pretrained:
  """The backbone exported to `directory` (a run's `export/backbone/`)."""
  params, batch_stats, config = checkpoint.load_backbone(directory)
  pretraining = _as_config(config)
  make, backbone_input, clip_view = backbone_spec(pretraining)
  return Pretrained(
      backbone=functional.split_module(nnx.eval_shape(lambda: make(nnx.Rngs(0))))[0],
      params=_as_state(params),
      batch_stats=_as_state(batch_stats),
      pretraining=pretraining,
      clip_view=clip_view,
      backbone_input=backbone_input,
  )
