"""How much do a backbone's features of two augmented views of one image agree?

  python experiments/view_agreement.py --config=configs/byol.py [--backbone=WORKDIR/export/backbone]

Bootstrap methods (BYOL, SimSiam, DINO, SwAV, NPID's bank) start from what the random
network's features of two views already share (see jaxssl/evaluation/agreement.py). This prints
it for the config's data and views, at random init or for an exported backbone, as configured
and with each kind of augmentation switched off:

  view retrieval    fraction of images whose own view 1 is the nearest (cosine of batch-centred
                    features) to their view 0; chance 1 / batch
  cos same / other  mean centred cosine of an image's two views / of two different images
  class of nearest  fraction whose nearest OTHER image's view 1 has the same label
"""

from __future__ import annotations

import copy
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/byol.py", "Config file.", lock_config=False)
_BACKBONE = flags.DEFINE_string("backbone", None, "An exported backbone (WORKDIR/export/backbone); default: random init.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Images per measurement.")
_BATCHES = flags.DEFINE_integer("batches", 2, "Measurements averaged.")


def _without_colour(view):
  view.jitter_prob, view.grayscale_prob, view.blur_prob, view.solarize_prob = 0.0, 0.0, 0.0, 0.0


def _without_crop(view):
  view.crop_scale = (1.0, 1.0)


_SETTINGS = {
    "as configured": (),
    "no colour, blur or solarize": (_without_colour,),
    "no crop (full image, flips only)": (_without_crop,),
    "neither (flips only)": (_without_colour, _without_crop),
}


def main(argv) -> None:
  del argv
  import jax
  import numpy as np
  from flax import nnx

  from jaxssl import compilation_cache

  compilation_cache.use_persistent_compilation_cache()

  from jaxssl import checkpoint, models
  from jaxssl.evaluation.agreement import view_agreement
  from jaxssl.data import pipeline, sources
  from jaxssl.transforms import augment
  from jaxssl.methods.common import view_images
  from jaxssl.models import functional

  config = _CONFIG.value
  if len(config.augment.views) != 2:
    raise app.UsageError(f"The config has {len(config.augment.views)} views; this script compares two image views.")
  if _BACKBONE.value:
    params, stats, exported = checkpoint.load_backbone(_BACKBONE.value)
    model_config = type(config.model)(exported["model"])
    train_mode, origin = False, f"exported backbone {_BACKBONE.value}"
  else:
    model_config, train_mode, origin = config.model, True, "random init (BN on batch statistics, as the baseline)"
  backbone, init_params, init_stats = functional.split_module(models.make_backbone(model_config, nnx.Rngs(config.seed)))
  if not _BACKBONE.value:
    params, stats = init_params, init_stats

  source = sources.make_source(config.data, config.data.train_split)
  print(f"{config.method} views on {config.data.name}, {model_config.backbone} x{model_config.width_multiplier}, {origin}")
  print(f"batch {_BATCH.value} (view-retrieval chance {100 / _BATCH.value:.1f}%), {_BATCHES.value} batches")
  print(f"{'views':34s} {'view retrieval':>15s} {'cos same':>9s} {'cos other':>10s} {'class of nearest':>17s}")
  for name, edits in _SETTINGS.items():
    views = [copy.deepcopy(v) for v in config.augment.views]
    for edit in edits:
      for view in views:
        edit(view)
    specs = tuple(augment.spec_from_config(v) for v in views)
    host_specs = pipeline.host_view_specs(views)
    data = pipeline.make_train_iterator(
        source, seed=config.seed, per_process_batch_size=_BATCH.value, view_specs=host_specs,
        process_index=0, process_count=1, num_threads=0, prefetch_batches=0,
    )

    @jax.jit
    def embed(rng, view0, view1):
      images = view_images(rng, (view0, view1), specs)
      return [backbone(params, stats, x, train=train_mode)[0] for x in images]

    rows = []
    for index in range(_BATCHES.value):
      batch = next(data)
      features0, features1 = embed(jax.random.key(index), batch["view0"], batch["view1"])
      rows.append(view_agreement(np.asarray(features0), np.asarray(features1), np.asarray(batch["label"])))
    data.close()
    retrieval, same, other, same_class = np.mean(rows, axis=0)
    print(f"{name:34s} {100 * retrieval:14.1f}% {same:9.3f} {other:10.3f} {100 * same_class:16.1f}%")


if __name__ == "__main__":
  app.run(main)
