"""Relative position / context prediction (Doersch, Gupta, Efros 2015, "Unsupervised Visual
Representation Learning by Context Prediction"), with the counter-measures of Mundhenk, Ho, Chen
2018 as switches; see jaxssl/methods/relative_position.py.

Presets (`--config=configs/relative_position.py:NAME`, tokens comma-separated):
  (none)       built-in scenes at 48 px on CPU: patches of 11 px in 16 px cells.
  quick        the same, shorter: at most 5 minutes on 2 cores.
  imagenet     the official code's patches (96 px with gaps of 48, jitter up to 7 px: cells of
               144 px in a 432 px crop) and a ResNet-50 patch encoder; fc7 4096.
  mundhenk     Mundhenk et al.'s improvements on: chroma blurring, yoked jitter, random aperture,
               rotation with classification.
"""

import ml_collections

_SCALES = ("quick", "imagenet")
_VARIANTS = ("mundhenk",)


def _view(size: int, crop_scale=(0.6, 1.0)) -> ml_collections.ConfigDict:
  """A random crop and a flip (mmselfsup also turns 66% grey); colour is handled per patch (see
  `relative_position.colour`), and each patch is normalised on its own."""
  return ml_collections.ConfigDict(
      dict(
          size=size,
          crop_scale=crop_scale,
          flip_prob=0.5,
          brightness=0.0,
          contrast=0.0,
          saturation=0.0,
          hue=0.0,
          jitter_prob=0.0,
          grayscale_prob=0.0,
          blur_prob=0.0,
          blur_sigma=(0.1, 2.0),
          solarize_prob=0.0,
      )
  )


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  tokens = [t for t in preset.split(",") if t]
  unknown = [t for t in tokens if t not in _SCALES + _VARIANTS]
  if unknown:
    raise ValueError(f"Unknown preset token(s) {unknown} for configs/relative_position.py; combine one of {_SCALES} with {_VARIANTS}, e.g. 'quick,mundhenk'.")
  mundhenk = "mundhenk" in tokens
  c = ml_collections.ConfigDict()
  c.method = "relative_position"
  c.seed = 0
  c.total_steps = 600
  c.batch_size = 128  # images, 8 pairs each; the patch encoder sees 9 patches per image
  c.log_every = 20
  c.checkpoint_every = 200
  c.keep_checkpoints = 2

  c.data = ml_collections.ConfigDict()
  c.data.name = "builtin:scenes"  # 'builtin:patterns', 'tfds:...', 'folder:/path/to/images'
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 48  # 3 cells of 16 px
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.image_key = "image"
  c.data.label_key = "label"
  c.data.num_classes = 0
  c.data.worker_count = 0
  c.data.train_examples = 0

  c.augment = ml_collections.ConfigDict()
  c.augment.views = [_view(48)]

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet18"
  c.model.width_multiplier = 0.25
  c.model.stem = "imagenet"
  c.model.dtype = "float32"

  c.relative_position = ml_collections.ConfigDict()
  c.relative_position.patch_size = 11  # official: 96 px patches in 144 px cells (2/3); 11 of 16 here
  c.relative_position.yoked_jitter = mundhenk  # Mundhenk: one offset for all patches of an image
  c.relative_position.colour = "drop"  # official code: colour dropping; paper: 'project'; or 'none'
  c.relative_position.chroma_blur_sigma = 1.5 if mundhenk else 0.0  # Mundhenk: chroma blurring (px)
  c.relative_position.aperture_probability = 0.5 if mundhenk else 0.0  # Mundhenk: random aperture
  c.relative_position.rotation_loss_weight = 1.0 if mundhenk else 0.0  # Mundhenk: rotation with classification
  # fc7 over the pair: official 4096 (fc6 4096 per patch before it); 512 on CPU, where a 4096-wide
  # layer would dominate the step of a width-0.25 network.
  c.relative_position.hidden_dim = 512

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"
  # official: lr 1e-5, no momentum, about 1M iterations; mmselfsup: SGD 0.2 at 256, momentum 0.9,
  # weight decay 1e-4. A short CPU run takes mmselfsup's.
  c.optimizer.base_learning_rate = 0.2
  c.optimizer.weight_decay = 1e-4
  c.optimizer.momentum = 0.9
  c.optimizer.trust_coefficient = 1e-3  # unused by SGD
  c.optimizer.exclude_bias_and_norm = False
  c.optimizer.warmup_steps = 20
  c.optimizer.grad_clip_norm = 0.0
  c.optimizer.lr_multipliers = ml_collections.ConfigDict()

  c.eval = ml_collections.ConfigDict()
  c.eval.knn_k = 20
  c.eval.knn_temperature = 0.07  # Wu et al. 2018
  c.eval.knn_every = 200
  c.eval.knn_during_training_examples = 2000
  c.eval.max_train_examples = 10000
  c.eval.max_test_examples = 10000
  c.eval.batch_size = 512

  if "quick" in tokens:
    c.total_steps = 300
    c.checkpoint_every = 150
    c.eval.knn_every = 150
  elif "imagenet" in tokens:
    c.data.name = "tfds:imagenet2012"
    c.data.train_split, c.data.eval_split = "train", "validation"
    c.data.image_size = 432  # three 144 px cells
    c.data.worker_count = 16
    c.batch_size = 64  # official: up to 512 patches per batch
    c.total_steps = 1000000  # official: about 1M iterations
    c.model.backbone = "resnet50"
    c.model.width_multiplier = 1.0
    c.model.dtype = "bfloat16"
    c.relative_position.patch_size = 96  # official: 96 px patches, gaps of 48
    c.relative_position.hidden_dim = 4096  # official
    c.checkpoint_every = 5000
    c.eval.knn_every = 0
    c.eval.max_train_examples = 100000
    c.eval.max_test_examples = 50000
    c.augment.views = [_view(432, (0.3, 1.0))]
  return c
