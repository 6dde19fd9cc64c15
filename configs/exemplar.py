"""Exemplar CNN (Dosovitskiy et al. 2014, "Discriminative Unsupervised Feature Learning with
Convolutional Neural Networks"); see jaxssl/methods/exemplar.py.

Presets (`--config=configs/exemplar.py:NAME`):
  (none)    built-in scenes on CPU: 1280 exemplars (surrogate classes), 2400 steps.
  quick     the same for 1200 steps: at most 5 minutes on 2 cores (600 steps gave kNN
            35.2 / 34.3 / 30.6 for seeds 0-2 against raw pixels 32.9; 1200 steps pass, see
            experiments/README.md).
  stl10     the paper's setting on TFDS stl10's unlabelled split: 16000 exemplars (the paper's
            8000-32000), 32 px patches upsampled to the network's input, heavy transformations.

The CPU presets use 1280 of the training images as exemplars, as configs/npid.py does for the
same reason: each surrogate class must be seen often enough in a few hundred steps (every 10
steps here) to be learned.
"""

import ml_collections

_PRESETS = ("", "quick", "stl10")


def _view(size: int, crop_scale=(0.2, 1.0)) -> ml_collections.ConfigDict:
  """The paper's transformations, as this library's augmentations: translation and scaling (a
  random resized crop), a flip, contrast and colour changes (its powers of saturation and value
  and hue shifts: colour jitter, always); the paper's small rotations are left out."""
  return ml_collections.ConfigDict(
      dict(
          size=size,
          crop_scale=crop_scale,
          flip_prob=0.5,
          brightness=0.4,
          contrast=0.4,
          saturation=0.4,
          hue=0.4,
          jitter_prob=1.0,
          grayscale_prob=0.2,
          blur_prob=0.0,
          blur_sigma=(0.1, 2.0),
          solarize_prob=0.0,
      )
  )


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  if preset not in _PRESETS:
    raise ValueError(f"Unknown preset {preset!r} for configs/exemplar.py; choose one of {_PRESETS}.")
  c = ml_collections.ConfigDict()
  c.method = "exemplar"
  c.seed = 0
  c.total_steps = 2400
  c.batch_size = 128  # paper: 128
  c.log_every = 20
  c.checkpoint_every = 400
  c.keep_checkpoints = 2
  # Split parameters and optimizer state over the devices (FSDP) instead of copying them to each:
  # for ViTs too large for one device's memory. Off: data parallelism with a replicated state.
  c.fsdp = False

  c.data = ml_collections.ConfigDict()
  c.data.name = "builtin:scenes"  # or 'builtin:patterns', 'tfds:...', 'folder:...'
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 32
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.image_key = "image"
  c.data.label_key = "label"
  c.data.num_classes = 0
  c.data.worker_count = 0
  # The exemplars: this many evenly spaced records (0: all); evaluation uses all. See the docstring.
  c.data.train_examples = 1280

  c.augment = ml_collections.ConfigDict()
  c.augment.views = [_view(32, (0.3, 1.0))]  # one transformed version of each exemplar per step

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet18"
  c.model.width_multiplier = 0.25
  c.model.stem = "imagenet"
  c.model.dtype = "float32"
  c.model.projection_dim = 128  # the classifier's input width
  # paper: a fully connected layer (512 units) before the softmax; with BN here, as NPID's CPU
  # presets need.
  c.model.head_hidden_dim = 512
  c.model.head_batch_norm = True

  c.exemplar = ml_collections.ConfigDict()
  c.exemplar.num_exemplars = 0  # surrogate classes; 0: one per training record (after train_examples)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"  # paper: SGD with momentum 0.9
  c.optimizer.base_learning_rate = 0.1  # paper: 0.01 at batch 128; larger for a short CPU run
  c.optimizer.weight_decay = 5e-4  # paper: 0.0004
  c.optimizer.momentum = 0.9
  c.optimizer.trust_coefficient = 1e-3  # unused by SGD
  c.optimizer.exclude_bias_and_norm = False
  c.optimizer.warmup_steps = 20  # paper: none
  c.optimizer.grad_clip_norm = 0.0
  c.optimizer.lr_multipliers = ml_collections.ConfigDict()

  c.eval = ml_collections.ConfigDict()
  c.eval.knn_k = 20
  c.eval.knn_temperature = 0.07  # Wu et al. 2018
  c.eval.knn_every = 400
  c.eval.knn_during_training_examples = 2000
  c.eval.max_train_examples = 10000
  c.eval.max_test_examples = 10000
  c.eval.batch_size = 512

  if preset == "quick":
    c.total_steps = 1200
    c.checkpoint_every = 400
    c.eval.knn_every = 400
  elif preset == "stl10":
    c.data.name = "tfds:stl10"
    c.data.train_split = "unlabelled"
    c.data.eval_split = "test"
    c.data.image_size = 96
    c.data.train_examples = 16000  # paper: 8000-32000 surrogate classes
    c.model.stem = "small"
    c.model.width_multiplier = 1.0
    c.total_steps = 16000 * 100 // 128  # about 100 passes over the exemplars
    c.optimizer.base_learning_rate = 0.02  # paper: 0.01 at 128
    c.checkpoint_every = 2000
    c.eval.knn_every = 0
    c.augment.views = [_view(96, (0.1, 1.0))]
  return c
