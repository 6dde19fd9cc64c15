"""NNX modules used as pure functions of explicit parameter and batch-statistic dicts.

Training state is a plain pytree of nested dicts (easy to checkpoint, shard, mask and EMA);
an NNX module is rebuilt from its static graph inside each traced call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx

from jaxssl.models import normalization


@dataclasses.dataclass(frozen=True)
class PureModule:
  """A module's static structure; call it with (params, batch_stats)."""

  graphdef: Any

  def __call__(
      self, params: dict, batch_stats: dict, *args, train: bool, views: int = 1, method: str = "__call__", **kwargs
  ) -> tuple[Any, dict]:
    """Runs the module (or its method `method`); returns (output, batch statistics after the call).

    In training mode BatchNorm normalises with the statistics of this (global) batch and
    updates its running averages; in eval mode it uses the running averages unchanged.
    `views = V > 1` says the batch holds V interleaved views (`normalization.interleave`), each
    of which BatchNorm normalises by its own statistics, as V separate passes would.
    """
    module = nnx.merge(self.graphdef, params, batch_stats)
    module.train() if train else module.eval()
    if views > 1:
      normalization.set_view_groups(module, views)
    output = getattr(module, method)(*args, **kwargs)
    return output, nnx.to_pure_dict(nnx.state(module, nnx.BatchStat))


def split_module(module: nnx.Module) -> tuple[PureModule, dict, dict]:
  """Splits a module into (pure module, params dict, batch-stats dict)."""
  graphdef, params, batch_stats = nnx.split(module, nnx.Param, nnx.BatchStat)
  return PureModule(graphdef), nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
