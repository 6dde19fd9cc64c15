"""Colorful image colorization (Zhang, Isola, Efros 2016, "Colorful Image Colorization") as a
pretext task; see jaxssl/methods/colorization.py.

Presets (`--config=configs/colorization.py:NAME`; tokens combine, e.g. `quick,larsson`):
  (none)    built-in scenes on CPU (objects whose colours depend on what they are), 1200 steps.
  quick     the same, 1000 steps: at most 5 minutes on 2 cores.
  imagenet  the paper's setting with a ResNet-50 in place of its VGG-style network: 176 px crops
            (official), batch 40 (official), Adam lr 3e-5 (paper: 3.16e-5, beta 0.9 / 0.99,
            weight decay 1e-3), ab targets on a grid of 44 cells (stride 4 of 176 px).
  larsson   Larsson et al. (2017)'s head instead: grey input, 32-bin hue and chroma
            histograms per target cell, KL loss (hue weighted 5 x chroma, as their code).
"""

import ml_collections

_TOKENS = ("quick", "imagenet", "larsson")


def _view(size: int, crop_scale=(0.5, 1.0)) -> ml_collections.ConfigDict:
  """A random crop and a flip, no colour change: the colours are the targets."""
  return ml_collections.ConfigDict(
      dict(size=size, crop_scale=crop_scale, flip_prob=0.5, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0,
           jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, blur_sigma=(0.1, 2.0), solarize_prob=0.0)
  )


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  tokens = [t for t in preset.split(",") if t]
  unknown = [t for t in tokens if t not in _TOKENS]
  if unknown:
    raise ValueError(f"Unknown preset token(s) {unknown} for configs/colorization.py; use any of {_TOKENS}, e.g. 'quick'.")
  c = ml_collections.ConfigDict()
  c.method = "colorization"
  c.seed = 0
  c.total_steps = 1200
  c.batch_size = 128
  c.log_every = 20
  c.checkpoint_every = 400
  c.keep_checkpoints = 2

  c.data = ml_collections.ConfigDict()
  c.data.name = "builtin:scenes"  # 'builtin:patterns', 'tfds:imagenet2012', 'folder:/path/to/images'
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 32
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.image_key = "image"
  c.data.label_key = "label"
  c.data.num_classes = 0
  c.data.worker_count = 0
  c.data.train_examples = 0

  c.augment = ml_collections.ConfigDict()
  c.augment.views = [_view(32)]

  c.colorization = ml_collections.ConfigDict()
  c.colorization.head = "larsson" if "larsson" in tokens else "zhang"  # 'zhang': ab bins; 'larsson': hue/chroma histograms
  # '' feeds the head's own paper's input: Lab's lightness L for Zhang's, the mean of RGB for Larsson's.
  # Scenes: both heads read the mean of RGB. The scenes' class colours differ more in it than in L
  # (kNN on the raw pixels: L 37.6, mean of RGB 45.0, RGB 32.9), and Zhang's head on L stayed
  # below raw pixels in every variant tried (experiments/README.md); seed 0, 500 steps: 24.8 on
  # L, 33.1 on the mean of RGB (be2fa2a). The imagenet preset keeps the paper's L.
  c.colorization.input = "grey"
  c.colorization.bins_file = ""  # '' derives the in-gamut 10-unit grid (261 bins); or a [Q, 2] .npy (the paper's 313)
  c.colorization.neighbours = 10  # official code: 10 (the paper says 5)
  c.colorization.sigma = 5.0  # paper: 5
  c.colorization.rebalance_mix = 0.5  # paper: lambda = 0.5
  c.colorization.prior_sigma = 5.0  # paper: the empirical prior smoothed by a Gaussian, sigma 5
  c.colorization.annealed_temperature = 0.38  # paper: T = 0.38
  c.colorization.target_cells = 8  # ab targets on an 8 x 8 grid: stride 4 at 32 px, as the official stride
  # 1: the head reads the last stage only (Zhang's fully convolutional net); more: a hypercolumn of
  # the last N blocks' outputs resized to the target grid, as Larsson et al.'s head reads.
  # CPU: the last stage of this network is a 2 x 2 map at 32 px, too coarse for an 8 x 8 target
  # grid; reading the last 6 blocks (8 x 8 down to 2 x 2) through 128 hidden units lifted kNN at
  # 600 steps, seed 0, from 27.9 to 40.2 with Larsson's head and from 19.3 to 23.9 with Zhang's
  # (raw pixels 32.9; a3f8f91).
  c.colorization.hypercolumn_blocks = 6
  c.colorization.head_hidden = 128  # hidden 1x1 layer of the hypercolumn head (Larsson's code: 1024); 0: none

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet18"
  c.model.width_multiplier = 0.25
  # The head needs a feature map: the 'half' stem leaves 2 x 2 cells at 32 px where the
  # 'imagenet' stem leaves 1 (upsampled to the 8 x 8 targets).
  c.model.stem = "half"
  c.model.dtype = "float32"
  # The last stages' 2 x 2 maps as matrix products (jaxssl/models/fast_paths.py): the same
  # network, 354 -> 226 ms a step of :quick on a 2-core Intel Xeon.
  c.model.fast_cpu_paths = True

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"  # paper: Adam
  c.optimizer.base_learning_rate = 2e-3  # CPU: Adam at the paper's 3e-5 barely moves in 600 steps
  c.optimizer.weight_decay = 1e-3  # paper: 1e-3
  c.optimizer.momentum = 0.9
  c.optimizer.trust_coefficient = 1e-3
  c.optimizer.exclude_bias_and_norm = False
  c.optimizer.warmup_steps = 20
  c.optimizer.grad_clip_norm = 0.0
  c.optimizer.lr_multipliers = ml_collections.ConfigDict()

  c.eval = ml_collections.ConfigDict()
  c.eval.knn_k = 20
  c.eval.knn_temperature = 0.07
  c.eval.knn_every = 200
  c.eval.knn_during_training_examples = 2000
  c.eval.max_train_examples = 10000
  c.eval.max_test_examples = 10000
  c.eval.batch_size = 512

  if "quick" in tokens:
    # As many steps as fit the 5 minutes: both heads' kNN still climbs at 500-600 (Zhang's head,
    # seed 0, mean-of-RGB input: 33.1 at 500 steps, 35.2 at 600, 40.4 at 1200; 89685a8, 74eafa6;
    # Larsson's at 500 steps: 35.1 / 37.4 / 33.3 for seeds 0 / 1 / 2 against raw pixels 32.9,
    # c731f79). At 226 ms a step (dense small maps, the hypercolumn head's first layer at each
    # block's resolution) 1000 steps of Zhang's head take about 4 minutes on a 2-core Intel Xeon.
    c.total_steps = 1000
    c.checkpoint_every = c.total_steps // 2
    c.eval.knn_every = c.total_steps // 2
  if "imagenet" in tokens:
    c.data.name = "tfds:imagenet2012"
    c.data.train_split, c.data.eval_split = "train", "validation"
    c.data.image_size = 176  # official crop
    c.data.worker_count = 16
    c.augment.views = [_view(176, (0.08, 1.0))]
    c.colorization.input = ""  # the paper's L for Zhang's head
    c.colorization.target_cells = 44  # stride 4
    # Zhang's network is fully convolutional to stride 4: its head reads the last stage. Larsson's
    # reads a hypercolumn of the whole trunk through 1024 hidden units (their code samples it at
    # 256 random pixels per image; here it covers the whole 44 x 44 grid).
    larsson = c.colorization.head == "larsson"
    c.colorization.hypercolumn_blocks = 16 if larsson else 1
    c.colorization.head_hidden = 1024 if larsson else 0
    c.model.backbone = "resnet50"
    c.model.width_multiplier = 1.0
    c.model.stem = "imagenet"
    c.model.dtype = "bfloat16"
    c.batch_size = 40  # official
    c.total_steps = 450000  # paper: 450k iterations
    c.optimizer.base_learning_rate = 3.16e-5 * 256 / 40  # paper: 3.16e-5 at 40 (scaled as lr x batch / 256)
    c.checkpoint_every = 5000
    c.eval.knn_every = 0
    c.eval.max_train_examples = 100000
    c.eval.max_test_examples = 50000
  return c
