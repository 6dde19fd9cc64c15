"""Export a pretrained backbone for other code: a Flax module, or PyTorch's names and layouts.

    python -m jaxssl.export --workdir=runs/simclr --format=torch   # -> runs/simclr/export/backbone.safetensors
    python -m jaxssl.export --workdir=runs/simclr --format=orbax   # -> runs/simclr/export/backbone/ (params, BN statistics, config)

A finished run already holds `WORKDIR/export/backbone/` (the orbax format: written at the end of
training, DINO's teacher where it applies). The torch format converts it into a safetensors file
whose keys and layouts are torchvision's ResNet (OIHW kernels, BN running statistics, a
`num_batches_tracked` per BN) or timm's ViT (`patch_embed.proj` as a convolution, fused `qkv`),
so that

    model = torchvision.models.resnet50()
    model.load_state_dict(safetensors.torch.load_file("backbone.safetensors"))

loads with no missing or unexpected keys. Such models end in a classifier (`fc` / `head`) that
pretraining does not have: the file carries a zero placeholder of 1000 classes for it (replace
it, or train it, for your task). Settings with no torchvision / timm counterpart (a ResNet width
multiplier, a stem other than the 7x7 one) are refused, naming the setting; use the orbax format.

`load_backbone(path)` returns the Flax NNX module with the weights, for downstream JAX code.

Most backbones read normalised RGB images. A few pretext tasks train theirs on another input,
which downstream code must give it too: colorization (Zhang's head: the lightness (L - 50) / 50
on all three channels; Larsson's: 2 * mean(RGB) - 1), jigsaw and relative position (each image
normalised per channel, as their tiles were) and multi-task with input harmonisation (grey). The
protocols of `jaxssl.evaluation` apply it (the method's `backbone_input_fn`); the safetensors
metadata names the method (`jaxssl_method`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import ml_collections
import numpy as np

from jaxssl.errors import UserError

PLACEHOLDER_CLASSES = 1000  # torchvision's and timm's default classifier size


def _conv(kernel: np.ndarray) -> np.ndarray:
  """Flax [kh, kw, in, out] -> PyTorch [out, in, kh, kw]."""
  return np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))


def _linear(kernel: np.ndarray) -> np.ndarray:
  """Flax [in, out] -> PyTorch [out, in]."""
  return np.ascontiguousarray(kernel.T)


def _batch_norm(prefix: str, params: dict, stats: dict) -> dict[str, np.ndarray]:
  return {
      f"{prefix}.weight": params["scale"],
      f"{prefix}.bias": params["bias"],
      f"{prefix}.running_mean": stats["mean"],
      f"{prefix}.running_var": stats["var"],
      f"{prefix}.num_batches_tracked": np.zeros((), np.int64),  # unused by eval-mode BN
  }


def resnet_state_dict(params: dict, stats: dict, depth: int) -> dict[str, np.ndarray]:
  """torchvision's `resnet{depth}` state_dict from `jaxssl.models.resnet.ResNet` variables."""
  from jaxssl.models import resnet  # pylint: disable=g-import-not-at-top

  state = {"conv1.weight": _conv(params["stem_conv"]["kernel"]), **_batch_norm("bn1", params["stem_bn"], stats["stem_bn"])}
  _, stage_sizes = resnet._DEPTHS[depth]  # pylint: disable=protected-access
  convs = ("conv1", "conv2", "conv3") if depth >= 50 else ("conv1", "conv2")
  index = 0
  for stage, num_blocks in enumerate(stage_sizes):
    for block in range(num_blocks):
      prefix = f"layer{stage + 1}.{block}"
      p, s = params["blocks"][index], stats["blocks"][index]
      for conv in convs:
        bn = "bn" + conv[-1]
        state[f"{prefix}.{conv}.weight"] = _conv(p[conv]["kernel"])
        state.update(_batch_norm(f"{prefix}.{bn}", p[bn], s[bn]))
      if "shortcut" in p:  # nnx.Sequential(conv, bn): torchvision's `downsample`
        state[f"{prefix}.downsample.0.weight"] = _conv(p["shortcut"]["layers"][0]["kernel"])
        state.update(_batch_norm(f"{prefix}.downsample.1", p["shortcut"]["layers"][1], s["shortcut"]["layers"][1]))
      index += 1
  features = state[f"layer4.{stage_sizes[-1] - 1}.{convs[-1]}.weight"].shape[0]
  state["fc.weight"] = np.zeros((PLACEHOLDER_CLASSES, features), np.float32)
  state["fc.bias"] = np.zeros((PLACEHOLDER_CLASSES,), np.float32)
  return state


def vit_state_dict(params: dict, vit_config) -> dict[str, np.ndarray]:
  """timm's `VisionTransformer` state_dict (class-token pooling) from `jaxssl.models.vit.ViT`."""
  from jaxssl.models import vit  # pylint: disable=g-import-not-at-top

  width, patch = vit_config.width, vit_config.patch_size
  grid = vit_config.image_size // patch
  if vit_config.position_embedding == "learned":
    position = params["position"]
  else:  # a fixed table in jaxssl; timm keeps it as a parameter: export its values
    position = np.concatenate([np.zeros((1, width), np.float32), vit.sincos_position_embedding(grid, grid, width)])[None]
  # The patch projection is a Linear over (row, column, channel)-flattened patches; timm's is a
  # P x P convolution with stride P, the same map with the kernel laid out [out, channel, row, column].
  embedding = params[vit.PATCH_EMBEDDING]
  state = {
      "cls_token": params["class_token"],
      "pos_embed": position,
      "patch_embed.proj.weight": np.ascontiguousarray(embedding["kernel"].reshape(patch, patch, 3, width).transpose(3, 2, 0, 1)),
      "patch_embed.proj.bias": embedding["bias"],
  }
  for i, block in params["blocks"].items():
    attention = block["attention"]
    prefix = f"blocks.{i}"
    state.update({
        f"{prefix}.norm1.weight": block["attention_norm"]["scale"],
        f"{prefix}.norm1.bias": block["attention_norm"]["bias"],
        # timm fuses q, k and v into one [3D, D] projection, in that order.
        f"{prefix}.attn.qkv.weight": np.concatenate([_linear(attention[n]["kernel"]) for n in ("query", "key", "value")]),
        f"{prefix}.attn.qkv.bias": np.concatenate([attention[n]["bias"] for n in ("query", "key", "value")]),
        f"{prefix}.attn.proj.weight": _linear(attention["output"]["kernel"]),
        f"{prefix}.attn.proj.bias": attention["output"]["bias"],
        f"{prefix}.norm2.weight": block["mlp_norm"]["scale"],
        f"{prefix}.norm2.bias": block["mlp_norm"]["bias"],
        f"{prefix}.mlp.fc1.weight": _linear(block["mlp_hidden"]["kernel"]),
        f"{prefix}.mlp.fc1.bias": block["mlp_hidden"]["bias"],
        f"{prefix}.mlp.fc2.weight": _linear(block["mlp_output"]["kernel"]),
        f"{prefix}.mlp.fc2.bias": block["mlp_output"]["bias"],
    })
  state.update({
      "norm.weight": params["norm"]["scale"],
      "norm.bias": params["norm"]["bias"],
      "head.weight": np.zeros((PLACEHOLDER_CLASSES, width), np.float32),
      "head.bias": np.zeros((PLACEHOLDER_CLASSES,), np.float32),
  })
  return state


def torch_state_dict(model_config: ml_collections.ConfigDict, params: dict, batch_stats: dict) -> dict[str, np.ndarray]:
  """The backbone of `model_config` in PyTorch's names and layouts; refuses what does not map."""
  from jaxssl import models  # pylint: disable=g-import-not-at-top

  params, batch_stats = as_numpy_tree(params), as_numpy_tree(batch_stats)
  name = model_config.backbone
  if name.startswith("resnet"):
    if model_config.width_multiplier != 1.0:
      raise UserError(
          f"config.model.width_multiplier={model_config.width_multiplier} has no torchvision counterpart (its ResNets "
          "start at 64 channels); export with --format=orbax instead."
      )
    if model_config.stem != "imagenet":
      raise UserError(
          f"config.model.stem='{model_config.stem}' has no torchvision counterpart (its ResNets start with a 7x7/2 "
          "convolution and a max-pool); export with --format=orbax instead."
      )
    return _float32(resnet_state_dict(params, batch_stats, int(name[len("resnet"):])))
  if name in models.vit.VARIANTS:
    return _float32(vit_state_dict(params, models.vit_config(model_config)))
  raise UserError(f"config.model.backbone '{name}' has no PyTorch export; export with --format=orbax instead.")


def as_numpy_tree(tree: Any) -> Any:
  """A restored params / statistics tree with NumPy leaves and the int block indices NNX uses
  (orbax stores them as strings, '0')."""
  if isinstance(tree, dict):
    return {(int(k) if isinstance(k, str) and k.isdigit() else k): as_numpy_tree(v) for k, v in tree.items()}
  return np.asarray(tree)


def _float32(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {k: (v if v.dtype == np.int64 else np.ascontiguousarray(v, np.float32)) for k, v in state.items()}


def load_backbone(path: str):
  """The backbone exported to `path` (WORKDIR/export/backbone) as an NNX module with its weights,
  in eval mode (BatchNorm uses the running statistics). A video method's backbone reads what its
  `backbone_input` makes of normalised clips [B, T, H, W, 3] (BraVe's motion view: their frame
  differences)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from jaxssl.evaluation import pretrained  # pylint: disable=g-import-not-at-top

  loaded = pretrained.load(path)
  module = nnx.merge(loaded.backbone.graphdef, loaded.params, loaded.batch_stats)
  module.eval()
  return module


def export(workdir: str, fmt: str) -> str:
  """Writes the backbone of a finished run in `fmt` ('torch' or 'orbax'); returns the path."""
  import json  # pylint: disable=g-import-not-at-top

  from jaxssl import checkpoint, methods  # pylint: disable=g-import-not-at-top

  source = os.path.join(os.path.abspath(workdir), "export", "backbone")
  if not os.path.isdir(source):
    raise UserError(f"'{workdir}' has no exported backbone (export/backbone/ is written when a run finishes); finish the run first.")
  if fmt == "orbax":
    return source
  if fmt != "torch":
    raise UserError(f"--format={fmt} is not known; use 'torch' or 'orbax'.")
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  params, batch_stats, config = checkpoint.load_backbone(source)
  if methods.is_video_method(config.get("method", "")):
    raise UserError(
        f"'{workdir}' holds the video backbone of a {config['method']} run, which has no torchvision or timm "
        "counterpart to take PyTorch's names from; use --format=orbax (or jaxssl.load_backbone)."
    )
  state = torch_state_dict(ml_collections.ConfigDict(config["model"]), params, batch_stats)
  target = source + ".safetensors"
  save_file(state, target, metadata={"format": "pt", "jaxssl_config": json.dumps(config["model"]), "jaxssl_method": str(config.get("method", ""))})
  return target


def main(argv: list[str] | None = None) -> None:
  import argparse  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a finished run's workdir")
  parser.add_argument("--format", default="torch", choices=("torch", "orbax"))
  args = parser.parse_args(argv)
  try:
    print(f"Wrote {export(args.workdir, args.format)}")
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  main()
