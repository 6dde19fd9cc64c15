"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Presets (`--config=configs/simclr.py:NAME`):
  (none)    the quickstart: built-in patterns on CPU, a few minutes on 2 cores.
  quick     the same run (600 steps with the fast CPU paths, under 2 minutes on 2 cores); 250 steps took off for 1 seed in 3.
  cifar10   ResNet-18 (small stem) on TFDS cifar10, the official code's CIFAR-10 command.
  imagenet  the paper's default: ResNet-50, batch 4096, LARS 0.3 x B / 256, tau 0.1, 100 epochs.
"""

import ml_collections


def _view(size: int, jitter_strength: float, blur_prob: float, crop_scale=(0.08, 1.0)) -> ml_collections.ConfigDict:
  """One view's augmentation: the paper's appendix A (both views drawn from the same family)."""
  return ml_collections.ConfigDict(
      dict(
          size=size,
          crop_scale=crop_scale,  # random-resized-crop area range (host side); paper: 0.08-1
          flip_prob=0.5,  # paper: 0.5
          brightness=0.8 * jitter_strength,  # paper: 0.8 s, colour strength s = 1 (ImageNet), 0.5 (CIFAR)
          contrast=0.8 * jitter_strength,
          saturation=0.8 * jitter_strength,
          hue=0.2 * jitter_strength,
          jitter_prob=0.8,  # paper: 0.8
          grayscale_prob=0.2,  # paper: 0.2
          blur_prob=blur_prob,  # paper: 0.5 on ImageNet, none on CIFAR-10
          blur_sigma=(0.1, 2.0),  # paper: sigma in [0.1, 2.0] at 224 px; scaled with the image size
          solarize_prob=0.0,  # SimCLR does not solarize
      )
  )


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "simclr"
  c.seed = 0
  c.total_steps = 600
  c.batch_size = 128
  c.log_every = 20
  c.checkpoint_every = 200
  c.keep_checkpoints = 2
  # Split parameters and optimizer state over the devices (FSDP) instead of copying them to each:
  # for ViTs too large for one device's memory. Off: data parallelism with a replicated state.
  c.fsdp = False

  c.data = ml_collections.ConfigDict()
  c.data.name = "builtin:patterns"  # 'builtin:textured_digits', 'tfds:cifar10', 'folder:/path/to/images'
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 32
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.image_key = "image"
  c.data.label_key = "label"
  c.data.num_classes = 0  # 0: take it from the dataset (for the online linear probe)
  c.data.worker_count = 0  # grain worker processes; 0 loads in the main process
  c.data.train_examples = 0  # pretrain on this many evenly spaced records (0: all); eval uses all

  c.augment = ml_collections.ConfigDict()
  c.augment.views = [_view(32, 1.0, 0.5, (0.3, 1.0)), _view(32, 1.0, 0.5, (0.3, 1.0))]
  for view in c.augment.views:
    # The built-in patterns come in random colours: a full-circle hue jitter and more grayscale
    # keep colour from being the cue that matches two views.
    view.hue, view.saturation, view.grayscale_prob = 0.5, 0.8, 0.5

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet18"  # 'resnet50' in the paper; 'vit_tiny', 'vit_small', 'vit_base' work too
  c.model.width_multiplier = 0.25
  c.model.stem = "imagenet"  # 'small' keeps full resolution (CIFAR-style), 4x the compute
  c.model.dtype = "float32"  # 'bfloat16' on TPU/GPU
  c.model.fast_cpu_paths = False  # jaxssl/models/fast_paths.py; on in :quick (re-measured with it)
  c.model.projector_num_layers = 2  # paper: 2 (Linear-BN-ReLU-Linear); SimCLR v2 uses 3
  c.model.projector_hidden_dim = 2048  # paper: 2048 (the ResNet-50 feature size)
  c.model.projection_dim = 128  # paper: 128
  # Used only when model.backbone is a ViT (see jaxssl/models/vit.py); 0 keeps the variant's size.
  c.model.vit = ml_collections.ConfigDict(
      dict(width=0, depth=0, num_heads=0, mlp_ratio=4.0, patch_size=4, position_embedding="sincos", freeze_patch_embedding=False)
  )
  c.model.vit.image_size = c.data.get_ref("image_size")

  c.simclr = ml_collections.ConfigDict()
  c.simclr.temperature = 0.2  # paper: 0.1 (ImageNet, batch 4096), 0.5 (CIFAR-10); 0.2 suits short CPU runs

  c.optimizer = ml_collections.ConfigDict()
  # The CPU quickstart uses SGD, as BYOL's does: LARS' trust ratio (eta 1e-3) barely moves the
  # weights in a few hundred steps. The paper's LARS is in the imagenet and cifar10 presets.
  c.optimizer.name = "sgd"
  c.optimizer.base_learning_rate = 0.3  # paper (LARS): 0.3 x batch / 256
  c.optimizer.weight_decay = 1e-4  # paper (LARS): 1e-6
  c.optimizer.momentum = 0.9  # paper: 0.9
  c.optimizer.trust_coefficient = 1e-3  # paper: 1e-3 (the official code's LARS eta)
  c.optimizer.exclude_bias_and_norm = True  # paper: biases and BN excluded from wd and LARS adaptation
  c.optimizer.warmup_steps = 20  # paper: 10 epochs
  c.optimizer.grad_clip_norm = 0.0  # 0: no clipping
  c.optimizer.lr_multipliers = ml_collections.ConfigDict()

  c.eval = ml_collections.ConfigDict()
  c.eval.knn_k = 20
  c.eval.knn_temperature = 0.07  # Wu et al. 2018
  c.eval.knn_every = 250  # steps between kNN evaluations during training (0: only at the end)
  c.eval.knn_during_training_examples = 2000  # training-set subset used as the kNN bank during training
  c.eval.max_train_examples = 10000
  c.eval.max_test_examples = 10000
  c.eval.batch_size = 512

  if preset == "quick":
    c.model.fast_cpu_paths = True  # the same network, without XLA:CPU's slow convolutions of tiny maps
    # 600 steps (the default's length; under 2 minutes on 2 cores with the fast paths): kNN 57.8 /
    # 50.3 / 61.3 for seeds 0 / 1 / 2 against raw pixels 32.5 (7d4b8bf). At 250 steps only seed 1 took off (14.9 / 48.0 /
    # 16.3; experiments/README.md).
    c.total_steps = 600
    c.checkpoint_every = 200
    c.eval.knn_every = 200
  elif preset == "cifar10":
    # The official code's CIFAR-10 command: ResNet-18, batch 512, 1000 epochs, LARS lr 1.0,
    # wd 1e-6, tau 0.5, colour strength 0.5, no blur.
    c.data.name = "tfds:cifar10"
    c.batch_size = 512
    c.total_steps = 1000 * 97  # 1000 epochs of 50k images at 512
    c.optimizer.name = "lars"
    c.optimizer.base_learning_rate = 1.0 * 256 / 512  # lr 1.0 at batch 512 under the B / 256 rule
    c.optimizer.weight_decay = 1e-6
    c.optimizer.warmup_steps = 10 * 97
    c.simclr.temperature = 0.5
    c.model.width_multiplier = 1.0
    c.model.stem = "small"
    c.checkpoint_every = 5000
    c.eval.knn_every = 10000
    c.augment.views = [_view(32, 0.5, 0.0), _view(32, 0.5, 0.0)]
  elif preset == "imagenet":
    c.data.name = "tfds:imagenet2012"
    c.data.train_split, c.data.eval_split = "train", "validation"
    c.data.image_size = 224
    c.batch_size = 4096  # paper
    c.total_steps = 100 * 312  # paper's default: 100 epochs of 1.28M images at 4096 (1000 for 69.3%)
    c.optimizer.name = "lars"  # paper
    c.optimizer.base_learning_rate = 0.3  # paper: 4.8 = 0.3 x 4096 / 256
    c.optimizer.weight_decay = 1e-6  # paper
    c.optimizer.warmup_steps = 10 * 312  # paper: 10 epochs
    c.simclr.temperature = 0.1  # paper / official code
    c.model.backbone = "resnet50"
    c.model.width_multiplier = 1.0
    c.model.dtype = "bfloat16"
    c.data.worker_count = 16
    c.checkpoint_every = 5000
    c.eval.knn_every = 0
    c.eval.max_train_examples = 100000
    c.eval.max_test_examples = 50000
    c.augment.views = [_view(224, 1.0, 0.5), _view(224, 1.0, 0.5)]
  elif preset:
    raise ValueError(f"Unknown preset '{preset}' for configs/simclr.py; use '', 'quick', 'cifar10' or 'imagenet'.")
  return c
