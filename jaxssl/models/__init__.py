"""Backbones and heads, built from config."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl.models import resnet

BACKBONES = ("resnet18", "resnet34", "resnet50")


def compute_dtype(name: str):
  """'float32' or 'bfloat16' (parameters stay float32; activations use this).

  'float32' maps to None: layers then compute in the dtype of their inputs and parameters,
  which is float32 in training and float64 when a test enables x64 to check exactness.
  """
  dtypes = {"float32": None, "bfloat16": jnp.bfloat16}
  if name not in dtypes:
    raise ValueError(f"config.model.dtype '{name}' is not supported; use one of {sorted(dtypes)}.")
  return dtypes[name]


def make_backbone(model_config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  """The encoder named by `config.model.backbone`; it has a `num_features` attribute."""
  name = model_config.backbone
  if name.startswith("resnet") and name[len("resnet"):].isdigit():
    return resnet.ResNet(
        resnet.ResNetConfig(
            depth=int(name[len("resnet"):]),
            width_multiplier=model_config.width_multiplier,
            stem=model_config.stem,
            dtype=compute_dtype(model_config.dtype),
        ),
        rngs=rngs,
    )
  raise ValueError(f"config.model.backbone '{name}' is not known; choose one of {BACKBONES}.")
