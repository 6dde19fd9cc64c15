"""MoCo v3 (Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers").

Presets (`--config=configs/moco_v3.py:NAME`):
  (none)             the quickstart: built-in patterns on CPU, a few minutes on 2 cores.
  quick              the same data with key momentum 0.5, 600 steps (about 2.5 minutes on 2 cores).
  imagenet           the paper's ViT-S/16: frozen random patch projection, AdamW lr 1.5e-4 x B / 256,
                     wd 0.1, tau 0.2, batch 4096, 300 epochs (40 of warm-up).
  imagenet_vit_base  the same with ViT-B/16 (76.7% linear top-1 in the paper).
  imagenet_resnet50  the paper's ResNet-50: LARS lr 0.6 x B / 256, wd 1e-6, tau 1.0, 100 epochs.
"""

import ml_collections


def _view(blur_prob: float, solarize_prob: float, size: int, crop_scale=(0.08, 1.0)) -> ml_collections.ConfigDict:
  """One view's augmentation; the official code's (BYOL's): blur 1.0 / 0.1, solarize 0 / 0.2."""
  return ml_collections.ConfigDict(
      dict(
          size=size,
          crop_scale=crop_scale,  # random-resized-crop area range (host side); official: 0.08-1 (ViT)
          flip_prob=0.5,
          brightness=0.4,
          contrast=0.4,
          saturation=0.2,
          hue=0.1,
          jitter_prob=0.8,
          grayscale_prob=0.2,
          blur_prob=blur_prob,
          blur_sigma=(0.1, 2.0),  # at 224 px; scaled with the image size
          solarize_prob=solarize_prob,
      )
  )


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "moco_v3"
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
  c.data.name = "builtin:patterns"  # 'builtin:textured_digits', 'tfds:imagenet2012', 'folder:/path/to/images'
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 32
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.image_key = "image"
  c.data.label_key = "label"
  c.data.num_classes = 0  # 0: take it from the dataset (for the online linear probe)
  c.data.worker_count = 0  # grain worker processes; 0 loads in the main process
  c.data.train_examples = 0  # pretrain on this many evenly spaced records (0: all); eval uses all

  # MoCo v3 uses BYOL's asymmetric views (official code: blur 1.0 / 0.1, solarize 0 / 0.2).
  c.augment = ml_collections.ConfigDict()
  c.augment.views = [_view(1.0, 0.0, 32, (0.3, 1.0)), _view(0.1, 0.2, 32, (0.3, 1.0))]
  for view in c.augment.views:
    # The built-in patterns come in random colours: a full-circle hue jitter and more grayscale
    # keep colour from being the cue that matches two views.
    view.hue, view.saturation, view.grayscale_prob = 0.5, 0.8, 0.5

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet18"  # paper: 'vit_small' / 'vit_base' (imagenet presets) or 'resnet50'
  c.model.width_multiplier = 0.25  # ResNet only
  c.model.stem = "imagenet"  # ResNet only; 'small' keeps full resolution (CIFAR-style)
  c.model.dtype = "float32"  # 'bfloat16' on TPU/GPU
  c.model.fast_cpu_paths = False  # jaxssl/models/fast_paths.py; on in :quick (re-measured with it)
  c.model.projector_num_layers = 2  # paper: 3 for ViT, 2 for ResNet
  c.model.projector_hidden_dim = 4096  # paper: 4096
  c.model.projection_dim = 256  # paper: 256
  c.model.predictor_num_layers = 2  # paper: 2
  c.model.predictor_hidden_dim = 4096  # paper: 4096
  c.model.predictor_output_batch_norm = False  # official code: True for ViT, False for ResNet
  # Used only when model.backbone is a ViT (see jaxssl/models/vit.py); 0 keeps the variant's size.
  c.model.vit = ml_collections.ConfigDict(
      dict(
          width=0,
          depth=0,
          num_heads=0,  # paper: 12 for ViT-S (instead of DeiT's 6) and ViT-B
          mlp_ratio=4.0,
          patch_size=4,  # paper: 16 at 224 px
          position_embedding="sincos",  # paper: fixed 2-D sin-cos
          freeze_patch_embedding=True,  # paper: the random patch projection is frozen (sec. 4.1)
      )
  )
  c.model.vit.image_size = c.data.get_ref("image_size")

  c.moco_v3 = ml_collections.ConfigDict()
  c.moco_v3.temperature = 0.2  # paper: 0.2 for ViT, 1.0 for ResNet-50
  c.moco_v3.base_momentum = 0.99  # paper: 0.99, raised to 1 by a half-cosine (0.996 for 1000-epoch ResNet)

  c.optimizer = ml_collections.ConfigDict()
  # The CPU quickstart uses SGD, as BYOL's does; the paper's AdamW (ViT) and LARS (ResNet) are
  # in the imagenet presets.
  c.optimizer.name = "sgd"
  c.optimizer.base_learning_rate = 0.3  # paper: AdamW 1.5e-4 (ViT), LARS 0.6 (ResNet-50), x batch / 256
  c.optimizer.weight_decay = 1e-4  # paper: 0.1 (ViT, AdamW), 1e-6 (ResNet-50, LARS)
  c.optimizer.momentum = 0.9  # paper (LARS): 0.9
  c.optimizer.trust_coefficient = 1e-3  # LARS only: the official code's eta
  c.optimizer.exclude_bias_and_norm = True  # official code: True for LARS, False (decay all) for AdamW
  c.optimizer.warmup_steps = 20  # paper: 40 epochs (ViT), 10 (ResNet)
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
    # The backbone's XLA:CPU fast paths: the same network, ~1.6x the step rate at 32 px; with them
    # kNN 65.9 / 59.4 / 65.3 in 141-154 s for seeds 0 / 1 / 2 (0137b90, a 2-core Intel Xeon).
    c.model.fast_cpu_paths = True
    # 600 steps (about 2.5 minutes on 2 cores): kNN 70.6 / 60.5 / 66.7 for seeds 0 / 1 / 2
    # against raw pixels 32.5; at 250 steps seed 0 did not take off (22.0 / 47.8 / 50.9).
    c.total_steps = 600
    c.checkpoint_every = 200
    c.eval.knn_every = 200
    # In 250 steps a 0.99 key encoder stays close to the random network (kNN 19.4 on the
    # built-in patterns); 0.9 gave 29.4 and 0.5 gave 52.7 (the paper's momentum ablation finds
    # even m = 0 workable). See experiments/README.md.
    c.moco_v3.base_momentum = 0.5
  elif preset in ("imagenet", "imagenet_vit_base", "imagenet_resnet50"):
    c.data.name = "tfds:imagenet2012"
    c.data.train_split, c.data.eval_split = "train", "validation"
    c.data.image_size = 224
    c.batch_size = 4096  # paper
    c.model.dtype = "bfloat16"
    c.data.worker_count = 16
    c.checkpoint_every = 5000
    c.eval.knn_every = 0
    c.eval.max_train_examples = 100000
    c.eval.max_test_examples = 50000
    crop_scale = (0.08, 1.0) if preset != "imagenet_resnet50" else (0.2, 1.0)  # official: crop-min 0.2 for ResNet
    c.augment.views = [_view(1.0, 0.0, 224, crop_scale), _view(0.1, 0.2, 224, crop_scale)]
    if preset == "imagenet_resnet50":
      c.model.backbone = "resnet50"
      c.model.width_multiplier = 1.0
      c.total_steps = 100 * 312  # 100 epochs of 1.28M images at 4096
      c.optimizer.name = "lars"
      c.optimizer.base_learning_rate = 0.6  # official code, 100 epochs
      c.optimizer.weight_decay = 1e-6  # official code
      c.optimizer.warmup_steps = 10 * 312  # official code: 10 epochs
      c.moco_v3.temperature = 1.0  # paper, ResNet-50
    else:
      c.model.backbone = "vit_small" if preset == "imagenet" else "vit_base"
      c.model.vit.num_heads = 12  # paper: 12 heads for ViT-S and ViT-B
      c.model.vit.patch_size = 16  # paper
      c.model.projector_num_layers = 3  # official code: 3-layer projector for ViT
      c.model.predictor_output_batch_norm = True  # official code, ViT
      c.total_steps = 300 * 312  # paper: 300 epochs
      c.optimizer.name = "adamw"  # paper
      c.optimizer.base_learning_rate = 1.5e-4  # paper: lr = 1.5e-4 x batch / 256
      c.optimizer.weight_decay = 0.1  # paper
      c.optimizer.exclude_bias_and_norm = False  # official code decays every parameter
      c.optimizer.warmup_steps = 40 * 312  # paper: 40 epochs
      c.moco_v3.temperature = 0.2  # paper, ViT
  elif preset:
    raise ValueError(
        f"Unknown preset '{preset}' for configs/moco_v3.py; use '', 'quick', 'imagenet', "
        f"'imagenet_vit_base' or 'imagenet_resnet50'."
    )
  return c
