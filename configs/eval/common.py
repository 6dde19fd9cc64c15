"""Settings shared by the evaluation protocols' configs (configs/eval/knn.py, linear.py)."""

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
