"""Self-supervised methods, looked up by `config.method`."""

from __future__ import annotations

import ml_collections

from jaxssl.methods.base import Method, TrainState  # noqa: F401


def make_method(config: ml_collections.ConfigDict, num_classes: int = 0) -> Method:
  """The method named by `config.method`; `num_classes` > 0 adds an online linear probe."""
  from jaxssl.methods import byol

  registry = {"byol": byol.BYOL}
  if config.method not in registry:
    raise ValueError(f"config.method '{config.method}' is not known; choose one of {sorted(registry)}.")
  return registry[config.method](config, num_classes)
