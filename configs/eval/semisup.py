"""Semi-supervised evaluation: fine-tuning a pretrained backbone on 1% and 10% of the training
labels (stratified, drawn with the seed, the indices saved beside the result); see
jaxssl/evaluation/finetune.py.

  python -m jaxssl.main --config=configs/eval/semisup.py --config.backbone=runs/simclr --workdir=runs/simclr_semisup
"""

import importlib.util
import os

import ml_collections

_spec = importlib.util.spec_from_file_location("jaxssl_eval_common", os.path.join(os.path.dirname(os.path.abspath(__file__)), "common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config():
  c = common.base_config("semisup")
  c.finetune = common.finetune_config()
  # With 1% of the labels an epoch is a few steps: more epochs (SimCLR's 1%: 60 epochs, 10%: 30).
  c.finetune.epochs = 60
  c.semisup = ml_collections.ConfigDict()
  c.semisup.fractions = (0.01, 0.1)
  # Fixed subsets instead of drawn ones: {'0.01': 'path/1pct.txt', ...}, one training-split index
  # per line (e.g. the indices a previous run saved in eval/), or one file name per line, as in
  # SimCLR's ImageNet lists (1percent.txt, 10percent.txt: 'n01440764_10026.JPEG'); names need
  # data that has them (an image folder, or TFDS's imagenet2012 `file_name`) and every listed
  # image among the loaded training examples (config.max_train_examples).
  c.semisup.subset_files = ml_collections.ConfigDict()
  return c
