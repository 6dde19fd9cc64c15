"""Weighted cosine kNN (Wu et al. 2018) of a pretrained backbone, over a grid of k and
temperatures computed in one pass; see jaxssl/evaluation/protocols.py.

  python -m jaxssl.main --config=configs/eval/knn.py --config.backbone=runs/simclr --workdir=runs/simclr_knn
"""

import importlib.util
import os

import ml_collections

_spec = importlib.util.spec_from_file_location("jaxssl_eval_common", os.path.join(os.path.dirname(os.path.abspath(__file__)), "common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config():
  c = common.base_config("knn")
  c.knn = ml_collections.ConfigDict()
  c.knn.ks = (10, 20, 50, 100, 200)  # 20: this project's summaries; 200: NPID's (Wu et al. 2018)
  c.knn.temperatures = (0.02, 0.07, 0.2)  # 0.07: NPID's
  return c
