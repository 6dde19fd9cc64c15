"""Collapse monitor: the per-dimension std of L2-normalised embeddings.

For embeddings spread over the unit sphere in D dimensions each coordinate has std about
1/sqrt(D); a collapsed representation (every image mapped to one point) has std 0. Accuracy can
look fine for a while as collapse sets in, so this is watched during training.
"""

from __future__ import annotations

import math

# Below this fraction of the healthy 1/sqrt(D), the embeddings are close to collapse.
COLLAPSE_FRACTION = 0.1


def collapse_ratio(embedding_std: float, dimension: int) -> float:
  """embedding_std * sqrt(D): about 1 when healthy, 0 when collapsed."""
  return float(embedding_std) * math.sqrt(dimension)


def collapse_warning(embedding_std: float, dimension: int, step: int) -> str | None:
  """A clear warning when the embeddings approach collapse, else None."""
  ratio = collapse_ratio(embedding_std, dimension)
  if ratio >= COLLAPSE_FRACTION:
    return None
  return (
      f"step {step}: the embeddings are collapsing (per-dimension std {embedding_std:.2e} is "
      f"{ratio:.3f} of the healthy 1/sqrt({dimension})); lower the learning rate, raise the "
      f"target decay, or check the augmentations."
  )
