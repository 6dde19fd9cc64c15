"""Rotation feature decoupling (Feng, Xu, Tao 2019, "Self-Supervised Representation Learning by
Rotation Feature Decoupling"); see jaxssl/methods/rotation_decoupling.py.

Presets (`--config=configs/rotation_decoupling.py:NAME`):
  (none)    built-in scenes on CPU (objects standing under a sky: an upright to learn).
  quick     the same, shorter: at most 5 minutes on 2 cores.
  imagenet  the official code's ImageNet setting with a ResNet-50 in place of its AlexNet: batch
            192, SGD Nesterov 0.9, weight decay 5e-4, NCE with 4096 noise samples, tau 0.07,
            memory momentum 0.5; the PU weights for the last 35 of 245 epochs.

As for RotNet, `builtin:scenes` (not `patterns`, which has no upright) is the CPU data.

Why the CPU presets differ from the official code (seed 0, all three losses, 600 steps; kNN on
the scenes against raw pixels 32.9 and random init 20.9, experiments/README.md):
* NPID's CPU view (configs/npid.py: crops of 30-100% of the image, colour jitter, grayscale 0.5):
  with the official view (a crop and a flip, no colour change) the features stayed near
  random-init level (23.5 on 1280 images, 347ba81); with NPID's, 46.7 at learning rate 0.1;
* 1280 of the 5000 training images, as NPID's CPU presets: each memory-bank entry is then
  rewritten every 10 steps instead of every 40, so it is a useful target within a short run
  (all 5000 images: 33.2 at step 450 where 1280 reach 39.8 at learning rate 0.1);
* 600 steps at learning rate 0.2 (RotNet's): 56.0.
"""

import ml_collections

_PRESETS = ("", "quick", "imagenet")


def _view(size: int, crop_scale=(0.5, 1.0)) -> ml_collections.ConfigDict:
  """The official code's augmentation: a random crop and a horizontal flip, no colour change.
  Flips keep the upright; a crop never turns the image."""
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
  if preset not in _PRESETS:
    raise ValueError(f"Unknown preset {preset!r} for configs/rotation_decoupling.py; choose one of {_PRESETS}.")
  c = ml_collections.ConfigDict()
  c.method = "rotation_decoupling"
  c.seed = 0
  c.total_steps = 1200
  c.batch_size = 128  # images; the network sees 4x as many inputs (official: 192)
  c.log_every = 20
  c.checkpoint_every = 200
  c.keep_checkpoints = 2

  c.data = ml_collections.ConfigDict()
  c.data.name = "builtin:scenes"  # 'builtin:patterns', 'tfds:cifar10', 'folder:/path/to/images'
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 32
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.image_key = "image"
  c.data.label_key = "label"
  c.data.num_classes = 0  # 0: take it from the dataset (for the online linear probe)
  c.data.worker_count = 0
  # Pretrain on this many evenly spaced records (0: all); evaluation uses all. 1280 on CPU, as
  # NPID's CPU presets: see the docstring.
  c.data.train_examples = 1280

  c.augment = ml_collections.ConfigDict()
  c.augment.views = [_view(32)]  # one view; its four rotations are made on the device
  # CPU presets: NPID's CPU view, without which the instance branch does not learn in a short
  # run (see the docstring).
  view = c.augment.views[0]
  view.crop_scale = (0.3, 1.0)
  view.brightness, view.contrast, view.saturation, view.hue = 0.4, 0.4, 0.8, 0.5
  view.jitter_prob, view.grayscale_prob = 1.0, 0.5

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet18"
  c.model.width_multiplier = 0.25
  c.model.stem = "imagenet"
  c.model.dtype = "float32"
  c.model.projection_dim = 128  # official: Linear(2048, 128) + L2 normalisation

  c.decoupling = ml_collections.ConfigDict()
  # official: AlexNet's fc7 (4096) is split; here a Linear-BN-ReLU layer on the pooled features
  # (0: split the pooled features themselves).
  c.decoupling.feature_dim = 512
  c.decoupling.rotation_fraction = 0.5  # official: fc7's first 2048 of 4096 features
  c.decoupling.rotation_weight = 1.0  # official: 1
  c.decoupling.invariance_weight = 1.0  # official: 1
  c.decoupling.instance_weight = 1.0  # official: 1
  c.decoupling.pu_gamma = 2.0  # official: w = 1 - p^2 for the rotated inputs; 0 turns PU off
  # official: the weighted loss from epoch 210 of 245 (a second stage); the same fraction here.
  c.decoupling.pu_start_step = c.get_ref("total_steps") * 210 // 245

  c.npid = ml_collections.ConfigDict()
  # official: NCE with 4096 noise samples. The CPU presets' 5000-entry bank affords the exact
  # softmax, which NPID's CPU presets need (configs/npid.py).
  c.npid.loss = "softmax"
  c.npid.temperature = 0.07  # official: 0.07
  c.npid.num_negatives = 4096  # official: 4096
  c.npid.bank_momentum = 0.5  # official: 0.5
  c.npid.bank_size = 0  # 0: one entry per training image

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"
  c.optimizer.nesterov = True  # official: SGD with Nesterov momentum
  c.optimizer.base_learning_rate = 0.2  # as configs/rotnet.py (official ImageNet: 0.01 at batch 192)
  c.optimizer.weight_decay = 5e-4  # official: 5e-4
  c.optimizer.momentum = 0.9  # official: 0.9
  c.optimizer.trust_coefficient = 1e-3  # unused by SGD
  c.optimizer.exclude_bias_and_norm = False  # official: weight decay on every parameter
  # official: step decay; here warm-up and cosine, as every preset.
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

  if preset == "quick":
    c.total_steps = 600
    c.checkpoint_every = 200
    c.eval.knn_every = 200
  elif preset == "imagenet":
    c.data.name = "tfds:imagenet2012"
    c.data.train_split, c.data.eval_split = "train", "validation"
    c.data.image_size = 224
    c.data.worker_count = 16
    c.data.train_examples = 0  # official: every image
    c.model.backbone = "resnet50"
    c.model.width_multiplier = 1.0
    c.model.dtype = "bfloat16"
    c.batch_size = 192  # official
    c.total_steps = 245 * 6673  # official: 245 epochs of 1.28M images at 192
    c.optimizer.base_learning_rate = 0.01 * 256 / 192  # official: 0.01 at 192
    c.npid.loss = "nce"  # official
    c.decoupling.feature_dim = 4096  # official: fc7
    c.checkpoint_every = 5000
    c.eval.knn_every = 0
    c.eval.max_train_examples = 100000
    c.eval.max_test_examples = 50000
    c.augment.views = [_view(224, (0.08, 1.0))]
  return c
