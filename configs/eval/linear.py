"""Linear probe of a frozen pretrained backbone: a grid of learning rates x weight decays trained
in one compiled pass, the best chosen on a validation split held out of the training split; see
jaxssl/evaluation/protocols.py. `mode`: 'features' trains on pre-extracted features of the
centred images (fast); 'augmented' is the standard protocol, a fresh random crop and flip of
every training image at every step through the frozen backbone, batches split over all devices.

  python -m jaxssl.main --config=configs/eval/linear.py --config.backbone=runs/simclr --workdir=runs/simclr_linear
"""

import importlib.util
import os

import ml_collections

_spec = importlib.util.spec_from_file_location("jaxssl_eval_common", os.path.join(os.path.dirname(os.path.abspath(__file__)), "common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config():
  c = common.base_config("linear")
  c.linear = ml_collections.ConfigDict()
  c.linear.learning_rates = (0.01, 0.03, 0.1, 0.3, 1.0)
  c.linear.weight_decays = (0.0, 1e-5, 1e-4, 1e-3)
  c.linear.epochs = 30
  c.linear.batch_size = 256
  c.linear.validation_every = 10  # every 10th training example of each class validates
  c.linear.mode = "features"  # or 'augmented'
  c.linear.crop_padding = 4  # augmented: random crop of the image reflect-padded by this many pixels
  c.linear.checkpoint_every = 500  # augmented: steps between checkpoints (the run resumes from them)
  return c
