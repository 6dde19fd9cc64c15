"""Fine-tuning of a pretrained backbone end to end on the labelled training split (minus a held-out
validation split); see jaxssl/evaluation/finetune.py.

  python -m jaxssl.main --config=configs/eval/finetune.py --config.backbone=runs/simclr --workdir=runs/simclr_finetune
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location("jaxssl_eval_common", os.path.join(os.path.dirname(os.path.abspath(__file__)), "common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config():
  c = common.base_config("finetune")
  c.finetune = common.finetune_config()
  return c
