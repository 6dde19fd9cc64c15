"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments").

Presets (`--config=configs/swav.py:NAME`):
  (none)    the quickstart: built-in patterns on CPU with multi-crop (2 x 32 px + 4 x 16 px),
            600 steps, about 9 minutes on 2 cores (kNN 50.7, raw pixels 32.5).
  quick     smaller crops (2 x 24 px + 2 x 12 px), 900 steps with `model.fast_cpu_paths`, base
            learning rate 0.6: about 3 minutes on 2 idle cores. SwAV takes off only after step 250 here at batch 128
            whatever was tried, so the step is made cheaper instead of the run shorter.
  imagenet  the paper's setting: ResNet-50, batch 4096, 800 epochs, 2 x 224 + 6 x 96 crops, LARS.
"""

import ml_collections


def _view(size: int, crop_scale, **overrides) -> ml_collections.ConfigDict:
  """One crop's augmentation; the paper's (appendix A / the reference's main_swav.py): colour
  distortion of strength 1 (0.8, 0.8, 0.8, 0.2 with p=0.8), grayscale p=0.2, blur p=0.5, the same
  for every crop."""
  view = dict(
      size=size,
      crop_scale=crop_scale,  # random-resized-crop area range (host side)
      flip_prob=0.5,
      brightness=0.8,
      contrast=0.8,
      saturation=0.8,
      hue=0.2,
      jitter_prob=0.8,
      grayscale_prob=0.2,
      blur_prob=0.5,
      blur_sigma=(0.1, 2.0),  # at 224 px; scaled with the image size
      solarize_prob=0.0,
  )
  view.update(overrides)
  return ml_collections.ConfigDict(view)


def _local_views(num: int, size: int, crop_scale, **overrides) -> ml_collections.ConfigDict:
  """The multi-crop local views: `num` crops of `size` px with area in `crop_scale` (0: none)."""
  local = _view(size, crop_scale, **overrides)
  local.num = num
  return local


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "swav"
  c.seed = 0
  c.total_steps = 600
  c.batch_size = 128
  c.log_every = 20
  c.checkpoint_every = 200
  c.keep_checkpoints = 2

  c.data = ml_collections.ConfigDict()
  c.data.name = "builtin:patterns"  # 'builtin:textured_digits', 'tfds:imagenet2012', 'folder:/path'
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 32
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.image_key = "image"
  c.data.label_key = "label"
  c.data.num_classes = 0  # 0: take it from the dataset (for the online linear probe)
  c.data.worker_count = 0  # grain worker processes; 0 loads in the main process
  c.data.train_examples = 0  # pretrain on this many evenly spaced records (0: all); eval uses all

  # Multi-crop: codes come from the 2 global crops, every crop predicts them. The paper's crops
  # (2 x 224 at 0.14-1, 6 x 96 at 0.05-0.14) are in the imagenet preset; on 32 px images a 5%
  # crop is a few pixels of background, so the CPU quickstart uses larger fractions.
  colour = dict(hue=0.5, saturation=0.8, grayscale_prob=0.5)  # as configs/byol.py
  c.augment = ml_collections.ConfigDict()
  c.augment.views = [_view(32, (0.3, 1.0), **colour), _view(32, (0.3, 1.0), **colour)]
  c.augment.local_views = _local_views(4, 16, (0.1, 0.3), **colour)

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet18"
  c.model.width_multiplier = 0.25
  c.model.stem = "imagenet"
  c.model.dtype = "float32"  # 'bfloat16' on TPU/GPU; the Sinkhorn step stays float32
  c.model.fast_cpu_paths = False  # jaxssl/models/fast_paths.py; on in :quick (re-measured with it)
  c.model.projector_hidden_dim = 2048  # paper: 2048
  c.model.projection_dim = 128  # paper: 128

  c.swav = ml_collections.ConfigDict()
  c.swav.num_prototypes = 100  # paper: 3000 for ImageNet; a few per class of the 10 built-in classes
  c.swav.temperature = 0.1  # paper: tau = 0.1
  # paper: epsilon = 0.05. From a small random network the embeddings start nearly identical, and
  # at 0.05 their Sinkhorn codes are nearly uniform, so the swapped prediction teaches nothing and
  # SwAV collapsed (600 steps: kNN 18.7, embedding std 0.008); at 0.02 it reached 50.7.
  c.swav.sinkhorn_epsilon = 0.02
  c.swav.sinkhorn_iterations = 3  # paper: 3
  # Queue of past global-crop embeddings scored with the batch in Sinkhorn; the reference uses
  # 3840 from epoch 15 for batch 256 and none at batch 4096. Must be a multiple of batch_size.
  c.swav.queue_length = 0
  c.swav.queue_start_step = 0

  c.optimizer = ml_collections.ConfigDict()
  # The CPU quickstart uses SGD, as configs/byol.py does (LARS with eta 1e-3 barely moves the
  # weights in a few hundred steps); the paper's LARS is in the imagenet preset.
  c.optimizer.name = "sgd"
  c.optimizer.base_learning_rate = 0.3  # paper (LARS): 4.8 at batch 4096 = 0.3 x batch / 256
  c.optimizer.weight_decay = 1e-6  # paper: 1e-6
  c.optimizer.momentum = 0.9  # paper: 0.9
  c.optimizer.trust_coefficient = 1e-3  # paper (LARC): 1e-3
  c.optimizer.exclude_bias_and_norm = True
  c.optimizer.warmup_steps = 20  # paper: 10 epochs (imagenet preset)
  c.optimizer.grad_clip_norm = 0.0
  c.optimizer.lr_multipliers = ml_collections.ConfigDict()
  # Prototypes frozen for the first epoch (paper: "freeze_prototypes_niters" 313 at batch 4096);
  # one epoch of the built-in training split is 11 steps at batch 128.
  c.optimizer.frozen_steps = ml_collections.ConfigDict({"prototypes": 11})

  c.eval = ml_collections.ConfigDict()
  c.eval.knn_k = 20
  c.eval.knn_temperature = 0.07  # Wu et al. 2018
  c.eval.knn_every = 250
  c.eval.knn_during_training_examples = 2000
  c.eval.max_train_examples = 10000
  c.eval.max_test_examples = 10000
  c.eval.batch_size = 512

  if preset == "quick":
    c.model.fast_cpu_paths = True  # the same network, without XLA:CPU's slow convolutions of tiny maps
    # 900 steps, which the fast paths fit in about 3 minutes: at 600 with them seed 2 had not taken
    # off (kNN 28.7 against raw pixels 32.5, 844e862); at 900 it reached 48.5 (43.6 at step 750).
    c.total_steps = 900
    for view in c.augment.views:
      view.size = 24  # evaluation still sees the whole 32 px images
    c.augment.local_views.size = 12
    c.augment.local_views.num = 2
    # The official batch-256 recipe's base rate (swav_400ep_bs256: 0.6). At 0.3 seed 1 never took
    # off (kNN 22.5; 900 steps did not help, nor epsilon 0.01: 15.5 at step 500, nor a queue);
    # at 0.6 the same seed reached 52.0.
    c.optimizer.base_learning_rate = 0.6
  elif preset == "imagenet":
    c.data.name = "tfds:imagenet2012"
    c.data.train_split, c.data.eval_split = "train", "validation"
    c.data.image_size = 224
    c.data.worker_count = 16
    c.batch_size = 4096  # paper
    c.total_steps = 800 * 313  # 800 epochs of 1.28M images at 4096
    c.augment.views = [_view(224, (0.14, 1.0)), _view(224, (0.14, 1.0))]  # paper
    c.augment.local_views = _local_views(6, 96, (0.05, 0.14))  # paper
    c.model.backbone = "resnet50"
    c.model.width_multiplier = 1.0
    c.model.dtype = "bfloat16"
    c.swav.num_prototypes = 3000  # paper
    c.swav.sinkhorn_epsilon = 0.05  # paper
    c.optimizer.name = "lars"  # paper: LARC over SGD
    c.optimizer.base_learning_rate = 0.3  # paper: 4.8 at 4096, cosine to 0.0048
    c.optimizer.exclude_bias_and_norm = False  # the reference's LARC adapts and decays every parameter
    c.optimizer.warmup_steps = 10 * 313
    c.optimizer.frozen_steps.prototypes = 313  # paper: the first epoch
    c.checkpoint_every = 5000
    c.eval.knn_every = 0
    c.eval.max_train_examples = 100000
    c.eval.max_test_examples = 50000
  elif preset:
    raise ValueError(f"Unknown preset '{preset}' for configs/swav.py; use '', 'quick' or 'imagenet'.")
  return c
