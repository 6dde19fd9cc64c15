"""Settings shared by the evaluation protocols' configs (configs/eval/knn.py, linear.py, finetune.py, semisup.py)."""

import ml_collections


def base_config(protocol: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.protocol = protocol
  c.backbone = ""  # a finished run's workdir (or its export/backbone/): required
  c.seed = 0
  c.batch_size = 256  # feature extraction
  c.max_train_examples = 50000  # evenly spaced subsets of the splits (all of the CPU data)
  c.max_test_examples = 10000
  # Empty values keep the pretraining's data settings (read from the backbone's config.json).
  c.data = ml_collections.ConfigDict()
  c.data.name = ""  # e.g. 'tfds:cifar10', 'folder:/path' to evaluate on other data
  c.data.train_split = ""
  c.data.eval_split = ""
  c.data.image_size = 0
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  return c


def finetune_config() -> ml_collections.ConfigDict:
  """Fine-tuning settings (jaxssl/evaluation/finetune.py), shared by finetune.py and semisup.py."""
  f = ml_collections.ConfigDict()
  f.learning_rate = 0.05  # SGD, Nesterov momentum 0.9, cosine decay to 0
  f.weight_decay = 5e-4  # on weights, not biases or norms
  f.epochs = 30
  f.batch_size = 256
  f.layer_decay = 1.0  # 1.0: off; e.g. 0.75 for ViTs (the rate x decay^(blocks above))
  f.batch_norm = "train"  # 'train' (batch statistics, running averages updated) or 'frozen'
  f.crop_padding = 4  # random crop of the image reflect-padded by this many pixels (CIFAR's 4 at 32 px)
  f.validation_every = 10  # finetune: every 10th training example of each class validates
  f.checkpoint_every = 500
  return f
