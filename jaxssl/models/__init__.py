"""Backbones and heads, built from config."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl.errors import UserError
from jaxssl.models import resnet, vit

BACKBONES = ("resnet18", "resnet34", "resnet50", *vit.VARIANTS)


def compute_dtype(name: str):
  """'float32' or 'bfloat16' (parameters stay float32; activations use this).

  'float32' maps to None: layers then compute in the dtype of their inputs and parameters,
  which is float32 in training and float64 when a test enables x64 to check exactness.
  """
  dtypes = {"float32": None, "bfloat16": jnp.bfloat16}
  if name not in dtypes:
    raise UserError(f"config.model.dtype '{name}' is not supported; use one of {sorted(dtypes)}.")
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
            zero_init_residual=model_config.get("zero_init_residual", False),
            fast_cpu_paths=model_config.get("fast_cpu_paths", False),
        ),
        rngs=rngs,
    )
  if name in vit.VARIANTS:
    return vit.ViT(vit_config(model_config), rngs=rngs)
  raise UserError(f"config.model.backbone '{name}' is not known; choose one of {BACKBONES}.")


def vit_config(model_config: ml_collections.ConfigDict) -> vit.ViTConfig:
  """The ViT named by `config.model.backbone`, with `config.model.vit` overrides (0: the variant's).

  Configs without a `model.vit` section get the defaults of `vit.ViTConfig`.
  """
  width, depth, num_heads = vit.VARIANTS[model_config.backbone]
  options = model_config.get("vit", None) or {}
  options = options.to_dict() if hasattr(options, "to_dict") else dict(options)
  defaults = vit.ViTConfig()
  return vit.ViTConfig(
      width=options.get("width") or width,
      depth=options.get("depth") or depth,
      num_heads=options.get("num_heads") or num_heads,
      mlp_ratio=options.get("mlp_ratio", defaults.mlp_ratio),
      patch_size=options.get("patch_size", defaults.patch_size),
      image_size=options.get("image_size", defaults.image_size),
      position_embedding=options.get("position_embedding", defaults.position_embedding),
      freeze_patch_embedding=bool(options.get("freeze_patch_embedding", defaults.freeze_patch_embedding)),
      dtype=compute_dtype(model_config.dtype),
  )
