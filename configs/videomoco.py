"""VideoMoCo (Pan et al. 2021, "VideoMoCo: Contrastive Video Representation Learning with
Temporally Adversarial Examples").

Presets (`--config=configs/videomoco.py:NAME`):
  (none)  built-in moving_shapes (offline audio-visual data; the audio is not used) on CPU: a
          small 3D CNN on 8-frame clips at 16 px, 600 steps at batch 32, the generator joining
          at step 300 (the paper's plain-MoCo first half).
  quick   the same for fewer steps: under 6 minutes on 2 CPU cores, evaluation included.
  paper   the official Kinetics-400 pretraining (the repository's README): R(2+1)D-18 on 32
          frames at 112 px, queue 65536, momentum 0.999, temperature 0.07, 128-d linear head,
          global batch 32, lr 0.005, 200 epochs of which the first 100 are plain MoCo. Needs
          TFDS kinetics400 (see `paper_requirements`) and accelerators.
"""

import ml_collections

paper_requirements = (
    "TFDS 'kinetics400', prepared with `tfds build kinetics400 --file_format=array_record` (the videos must be "
    "downloaded by hand), and accelerators for 32 clips of 32 frames at 112 px per step."
)


def _clip_augment(hue: float = 0.4) -> ml_collections.ConfigDict:
  """Colour augmentation of the official code (kornia: ColorJitter(0.4, 0.4, 0.4, 0.4) and
  grayscale with p = 0.2), drawn once per clip (the code draws it per frame, see
  jaxssl/methods/videomoco.py)."""
  return ml_collections.ConfigDict(
      dict(
          brightness=0.4,
          contrast=0.4,
          saturation=0.4,
          hue=hue,
          jitter_prob=1.0,
          grayscale_prob=0.2,
          blur_prob=0.0,
          blur_sigma=(0.1, 2.0),
          solarize_prob=0.0,
      )
  )


def _clip(modality: str, num_frames: int, stride: int, size: int, crop_scale=(0.2, 1.0), flip_prob=0.5, hue=0.4) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      dict(
          modality=modality,  # 'rgb' (the paper) or 'motion' (frame differences, for short CPU runs)
          num_frames=num_frames,
          stride=stride,
          size=size,
          crop_scale=crop_scale,  # official RandomResizedCropVideo(112, (0.2, 1)): one box per clip
          flip_prob=flip_prob,
          augment=_clip_augment(hue),
      )
  )


def get_config(preset: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "videomoco"
  c.seed = 0
  c.total_steps = 600
  c.batch_size = 32  # official: 32 clips per step
  c.log_every = 20
  c.checkpoint_every = 150
  c.keep_checkpoints = 2

  c.data = ml_collections.ConfigDict()
  c.data.kind = "video"
  c.data.name = "builtin:moving_shapes"  # 'tfds:kinetics400', 'folder:/path/to/videos'
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 32  # unused by clip evaluation (the clip's size is); kept for shared code
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.video_key = "video"
  c.data.label_key = "label"
  c.data.audio_key = "audio"
  c.data.flow_key = "flow"
  c.data.fps = 25.0  # TFDS sources only (built-in data and video files know their own)
  c.data.audio_sample_rate = 8000  # decoded but not used by VideoMoCo
  c.data.num_classes = 0
  c.data.worker_count = 0
  c.data.train_examples = 0

  c.videomoco = ml_collections.ConfigDict()
  # The built-in paths include mirror-image pairs (clockwise vs counter-clockwise circles), so
  # flips would make classes indistinguishable. The clips are seen as motion (frame
  # differences; the generator drops 2 of the 7), as GDT's and BraVe's CPU presets:
  # a small network fed RGB clips of this data does not find the motion in a few hundred steps.
  c.videomoco.clip = _clip("motion", 8, 1, 16, crop_scale=(0.3, 1.0), flip_prob=0.0)
  # Paper: R(2+1)D-18 (the paper preset); too slow for a short CPU run (see configs/gdt.py).
  c.videomoco.video_backbone = "small3d"
  c.videomoco.video_width_multiplier = 0.5
  c.videomoco.temperature = 0.2  # official 0.07 (paper preset); see model.mlp_head
  # Official K = 65536 and m = 0.999. A run of a few hundred steps needs a key encoder that
  # follows the query encoder closely and a queue of recent keys (as configs/moco.py:quick).
  c.videomoco.queue_size = c.get_ref("batch_size") * 2
  c.videomoco.momentum = 0.5
  c.videomoco.temporal_decay = 0.99999  # official t: weight t^age of each queued negative
  c.videomoco.shuffle_bn = True
  c.videomoco.bn_groups = 4  # BN statistics per sub-batch, keys shuffled (shuffle-BN)
  # The generator: drops this fraction of each query clip's frames (paper: 25%, 8 of 32).
  c.videomoco.drop_fraction = 0.25
  c.videomoco.adversarial_start_step = c.get_ref("total_steps") // 2  # paper: the second half
  c.videomoco.generator_width = 16  # channels of the per-frame trunk
  c.videomoco.generator_hidden = 32  # bi-LSTM units, split between the directions (official 128)

  c.model = ml_collections.ConfigDict()
  c.model.dtype = "float32"
  # Official: a linear 128-d head (MoCo v1; `--mlp` gives v2's fc-ReLU-fc). As in
  # configs/moco.py's CPU presets, a hidden layer with BN is what lets a small random network
  # start learning in a short run.
  c.model.mlp_head = True
  c.model.head_batch_norm = True
  c.model.projector_hidden_dim = 128
  c.model.projection_dim = 64

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"  # official: SGD, momentum 0.9
  # x batch / 256. Official: lr 0.005 at batch 32 (base 0.04); short CPU runs need a larger step.
  c.optimizer.base_learning_rate = 1.0
  c.optimizer.weight_decay = 1e-4  # official
  c.optimizer.momentum = 0.9
  c.optimizer.trust_coefficient = 1e-3  # unused by SGD
  c.optimizer.exclude_bias_and_norm = False  # official: weight decay on every parameter
  c.optimizer.warmup_steps = 40  # official: none
  c.optimizer.grad_clip_norm = 0.0

  c.eval = ml_collections.ConfigDict()
  c.eval.knn_k = 20
  c.eval.knn_temperature = 0.07
  c.eval.knn_every = 150
  c.eval.knn_during_training_examples = 1200
  c.eval.max_train_examples = 10000
  c.eval.max_test_examples = 10000
  c.eval.batch_size = 200

  if preset == "quick":
    c.total_steps = 300
    c.eval.knn_every = 0
  elif preset == "paper":
    c.data.name = "tfds:kinetics400"
    c.data.eval_split = "validation"
    c.data.fps = 30.0
    c.videomoco.clip = _clip("rgb", 32, 1, 112)
    c.videomoco.video_backbone = "r2plus1d_18"  # the README's command (the code's default is r3d_18)
    c.videomoco.video_width_multiplier = 1.0
    c.videomoco.temperature = 0.07
    c.videomoco.queue_size = 65536
    c.videomoco.momentum = 0.999
    c.videomoco.bn_groups = 8  # shuffle-BN over 8 GPUs of 4 clips
    c.videomoco.generator_width = 64
    c.videomoco.generator_hidden = 128  # official: 64 per direction
    c.model.mlp_head = False  # official: linear fc (no `--mlp`)
    c.model.head_batch_norm = False
    c.model.projection_dim = 128
    c.model.dtype = "bfloat16"
    # 200 epochs of Kinetics-400 (~240k videos) at 32: 7500 steps per epoch; the generator joins
    # after 100 (adversarial_start_step follows total_steps).
    c.total_steps = 200 * 7500
    c.optimizer.base_learning_rate = 0.04  # lr 0.005 at batch 32
    c.optimizer.warmup_steps = 0
    # Official: lr x 0.1 at epochs 120 and 160; the library's schedule is cosine to zero.
    c.data.worker_count = 32
    c.checkpoint_every = 5000
    c.eval.knn_every = 0
    c.eval.batch_size = 256
  elif preset:
    raise ValueError(f"Unknown preset '{preset}' for configs/videomoco.py; use '', 'quick' or 'paper'.")
  return c
