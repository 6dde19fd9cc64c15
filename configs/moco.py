"""MoCo v1 / v2 (He et al. 2020, "Momentum Contrast"; Chen et al. 2020, "Improved Baselines").

The preset is a comma-separated list of tokens (`--config=configs/moco.py:v1,quick`):
  v2 (default) | v1        MoCo v2 (MLP head, tau 0.2, blur) or v1 (linear head, tau 0.07)
  (none) | quick | imagenet
                           built-in patterns on CPU (600 steps), 600 steps with the fast CPU
                           paths in about 2.5 minutes, or the paper's ImageNet setting (ResNet-50, 200 ep.)
  end_to_end | memory_bank the MoCo paper's other dictionaries (fig. 2) instead of the queue
"""

import ml_collections

_VERSIONS = ("v1", "v2")
_SCALES = ("quick", "imagenet")
_DICTIONARIES = ("end_to_end", "memory_bank")


def _view(version: str, size: int, crop_scale=(0.2, 1.0)) -> ml_collections.ConfigDict:
  """One view's augmentation; both views are drawn alike. v1: the MoCo paper, sec. 3.3
  (colour jitter 0.4 always, grayscale 0.2); v2: Chen et al. 2020 (SimCLR's jitter with
  p = 0.8, hue 0.1, and Gaussian blur with p = 0.5)."""
  v2 = version == "v2"
  return ml_collections.ConfigDict(
      dict(
          size=size,
          crop_scale=crop_scale,  # paper: RandomResizedCrop(scale=(0.2, 1.0))
          flip_prob=0.5,
          brightness=0.4,
          contrast=0.4,
          saturation=0.4,
          hue=0.1 if v2 else 0.4,
          jitter_prob=0.8 if v2 else 1.0,
          grayscale_prob=0.2,
          blur_prob=0.5 if v2 else 0.0,  # v2 adds blur (sigma 0.1-2.0 at 224 px)
          blur_sigma=(0.1, 2.0),
          solarize_prob=0.0,
      )
  )


def _parse(preset: str) -> tuple[str, str, str]:
  tokens = [t for t in preset.split(",") if t]
  unknown = [t for t in tokens if t not in _VERSIONS + _SCALES + _DICTIONARIES]
  if unknown:
    raise ValueError(
        f"Unknown preset token(s) {unknown} for configs/moco.py; combine one of {_VERSIONS}, one of "
        f"{_SCALES} and one of {_DICTIONARIES}, e.g. 'v1,quick'."
    )
  pick = lambda options, default: next((t for t in tokens if t in options), default)
  return pick(_VERSIONS, "v2"), pick(_SCALES, ""), pick(_DICTIONARIES, "queue")


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  version, scale, dictionary = _parse(preset)
  c = ml_collections.ConfigDict()
  c.method = "moco"
  c.seed = 0
  c.total_steps = 600
  c.batch_size = 128  # paper: 256 over 8 GPUs
  c.log_every = 20
  c.checkpoint_every = 200
  c.keep_checkpoints = 2

  c.data = ml_collections.ConfigDict()
  c.data.name = "builtin:patterns"  # or 'builtin:textured_digits', 'tfds:...', 'folder:...'
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 32
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.image_key = "image"
  c.data.label_key = "label"
  c.data.num_classes = 0  # 0: take it from the dataset (for the online linear probe)
  c.data.worker_count = 0
  c.data.train_examples = 0  # pretrain on this many evenly spaced records (0: all); eval uses all

  c.augment = ml_collections.ConfigDict()
  c.augment.views = [_view(version, 32, (0.3, 1.0)) for _ in range(2)]
  for view in c.augment.views:
    # As in configs/byol.py: the built-in patterns come in random colours (full-circle hue
    # jitter, more grayscale).
    view.hue, view.saturation, view.grayscale_prob = 0.5, 0.8, 0.5

  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet18"
  c.model.width_multiplier = 0.25
  c.model.stem = "imagenet"
  c.model.dtype = "float32"
  c.model.fast_cpu_paths = False  # jaxssl/models/fast_paths.py; on in :quick (re-measured with it)
  c.model.mlp_head = version == "v2"  # v2: fc-ReLU-fc head; v1: one linear layer
  c.model.projector_hidden_dim = 2048  # v2: 2048 (the backbone's width for ResNet-50)
  c.model.projection_dim = 128  # paper: 128
  # Official v2 head: fc-ReLU-fc, no BN. On the CPU presets a BN after the hidden layer is what
  # lets a small random network start learning (v2 :quick, 250 steps: kNN 14.9 -> 27.9).
  c.model.head_batch_norm = c.model.mlp_head

  c.moco = ml_collections.ConfigDict()
  c.moco.dictionary = dictionary  # 'queue' (MoCo), 'end_to_end', 'memory_bank' (paper, fig. 2)
  # paper: K = 65536 for 1.28M images. Must be a multiple of the keys enqueued per step (the
  # global batch; twice that with `symmetric`). On the CPU presets two batches' keys: older keys come from a network that has since moved a lot (1024 keys
  # and m 0.99 gave kNN 17.0 in 250 steps, below raw pixels).
  c.moco.queue_size = c.get_ref("batch_size") * 2  # follows --config.batch_size
  # paper: m = 0.999. A run of a few hundred steps needs a key encoder that follows the query
  # encoder closely (as configs/moco_v3.py:quick; solo-learn uses 0.99 on CIFAR).
  c.moco.momentum = 0.5
  c.moco.temperature = 0.2 if version == "v2" else 0.07  # v1: 0.07; v2: 0.2
  # The official CIFAR-10 demo's `--symmetric`: each view is also a query against the other's key
  # (the two losses summed, both views' keys enqueued); the paper's ImageNet code is asymmetric
  # (the imagenet preset). A short CPU run needs the second direction's signal: :quick (350
  # steps) went from kNN 14.3 / 23.0 / 16.0 (v2) and 28.5 / 26.3 / 43.5 (v1) for seeds 0-2 to
  # 44.1 / 40.2 / 43.0 (v2) and, at 600 steps, 51.2 / 59.7 / 44.2 (v1); raw pixels 29.2
  # (experiments/README.md).
  c.moco.symmetric = True
  c.moco.shuffle_bn = True  # paper: shuffle-BN; here BN statistics per sub-batch, keys shuffled
  c.moco.bn_groups = 8  # sub-batches for BN statistics (paper: 8 GPUs, 32 images each)
  c.moco.bank_size = 0  # memory bank rows; 0: the number of training examples
  c.moco.bank_negatives = 4096  # memory bank: negatives sampled per step (Wu et al. 2018: 4096)
  c.moco.bank_momentum = 0.5  # memory bank: momentum of the representation update (Wu et al.)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"  # paper: SGD, momentum 0.9
  # paper: 0.03 x batch / 256. The short CPU runs learn faster with a larger rate; at 0.3 the
  # backbone features grew until the online probe's loss exploded, and (MoCo) the first steps
  # against the random initial queue pulled all embeddings together.
  c.optimizer.base_learning_rate = 0.1
  c.optimizer.weight_decay = 1e-4  # paper: 1e-4
  c.optimizer.momentum = 0.9  # paper: 0.9
  c.optimizer.trust_coefficient = 1e-3  # unused by SGD
  c.optimizer.exclude_bias_and_norm = False  # paper: weight decay on every parameter
  c.optimizer.warmup_steps = 20  # paper: none (v1 steps the lr down at epochs 120, 160; v2 is cosine)
  c.optimizer.grad_clip_norm = 0.0
  c.optimizer.lr_multipliers = ml_collections.ConfigDict()

  c.eval = ml_collections.ConfigDict()
  c.eval.knn_k = 200  # Wu et al. 2018: k = 200
  c.eval.knn_temperature = 0.07  # Wu et al. 2018: tau = 0.07
  c.eval.knn_every = 250
  c.eval.knn_during_training_examples = 2000
  c.eval.max_train_examples = 10000
  c.eval.max_test_examples = 10000
  c.eval.batch_size = 512

  if scale == "quick":
    c.model.fast_cpu_paths = True  # the same network, without XLA:CPU's slow convolutions of tiny maps
    # 600 steps. v1 at 350 beat raw pixels only by 2.0 on seed 2 (45.0 / 54.0 / 31.2; at 600:
    # 51.2 / 59.7 / 44.2). v2 ran 350 with the convolutions; with the fast paths seed 2 had not
    # taken off by then (kNN 25.4 against raw pixels 29.2, 7d4b8bf) and reached 54.4 at 600.
    c.total_steps = 600
    if version == "v2":
      # A longer warm-up: with 20 steps the embeddings shrank within the first 25 steps on the
      # AVX2 EPYC and v2 stayed below raw pixels (19.7 / 18.1 / 31.1 at d388adc; base lr 0.05
      # instead: 48.8 / 19.0 / 42.7); with 100 steps, 44.8 / 38.7 / 53.3 (experiments/README.md).
      c.optimizer.warmup_steps = 100
    c.checkpoint_every = c.total_steps // 2
    c.eval.knn_every = c.total_steps // 2
  elif scale == "imagenet":
    c.data.name = "tfds:imagenet2012"
    c.data.train_split, c.data.eval_split = "train", "validation"
    c.data.image_size = 224
    c.data.worker_count = 16
    c.batch_size = 256  # paper
    c.total_steps = 200 * 5005  # 200 epochs of 1.28M images at 256
    c.model.backbone = "resnet50"
    c.model.width_multiplier = 1.0
    c.model.dtype = "bfloat16"
    c.model.head_batch_norm = False  # official v2 head: fc-ReLU-fc
    c.moco.queue_size = 65536  # paper
    c.moco.symmetric = False  # paper: one direction
    c.moco.momentum = 0.999  # paper
    c.moco.bn_groups = 8  # paper: 8 GPUs
    c.optimizer.base_learning_rate = 0.03  # paper
    c.optimizer.warmup_steps = 0  # paper
    c.checkpoint_every = 5000
    c.eval.knn_every = 0
    c.eval.max_train_examples = 100000
    c.eval.max_test_examples = 50000
    c.augment.views = [_view(version, 224) for _ in range(2)]
  return c
