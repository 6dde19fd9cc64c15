"""DeepPermNet (Santa Cruz, Fernando, Cherian, Gould 2017, "DeepPermNet: Visual Permutation
Learning"): `configs/jigsaw.py` with the `deeppermnet` head token.

Presets (`--config=configs/deeppermnet.py:NAME`): (none), quick, imagenet, as configs/jigsaw.py.
The head outputs 9 x 9 scores, one softmax over all 81, one Sinkhorn row-then-column pass
(epsilon 0.001), and the loss is the cross-entropy against the true permutation matrix; the
permutation is drawn uniformly from all 9! (the official Caffe code, `perm_matrix_layer`).
"""

import importlib.util
import pathlib


def get_config(preset: str = ""):
  # Loaded by path: config files are read by file name, not imported as a package.
  spec = importlib.util.spec_from_file_location("jaxssl_jigsaw_config", pathlib.Path(__file__).with_name("jigsaw.py"))
  jigsaw = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(jigsaw)
  return jigsaw.get_config(",".join(filter(None, [preset, "deeppermnet"])))
