"""Export round trip: the safetensors file, read by a NumPy forward pass written in PyTorch's
conventions (NCHW activations, OIHW kernels, torchvision / timm key names), computes what the JAX
backbone computes; `load_backbone` gives the module back."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.special
from flax import nnx
from safetensors.numpy import load_file

from jaxssl import checkpoint, export, models
from jaxssl.errors import UserError
from jaxssl.models import functional

# ---------------------------------------------------------------- PyTorch-convention references


def _conv2d(x, weight, stride=1, padding=0, bias=None):
  """torch.nn.functional.conv2d: x [N, C, H, W], weight [O, C, kh, kw]."""
  _, _, kh, kw = weight.shape
  x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  height = (x.shape[2] - kh) // stride + 1
  width = (x.shape[3] - kw) // stride + 1
  out = np.zeros((x.shape[0], weight.shape[0], height, width), np.float64)
  for i in range(kh):
    for j in range(kw):
      window = x[:, :, i:i + stride * height:stride, j:j + stride * width:stride]
      out += np.einsum("nchw,oc->nohw", window, weight[:, :, i, j])
  return out if bias is None else out + bias[None, :, None, None]


def _batch_norm(x, state, prefix):
  """Eval-mode torch.nn.BatchNorm2d (eps 1e-5)."""
  scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + 1e-5)
  return (x - state[f"{prefix}.running_mean"][None, :, None, None]) * scale[None, :, None, None] + state[f"{prefix}.bias"][None, :, None, None]


def _max_pool_3x3_stride_2(x):
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  size = (x.shape[2] - 3) // 2 + 1
  return np.max([x[:, :, i:i + 2 * size:2, j:j + 2 * size:2] for i in range(3) for j in range(3)], axis=0)


def torchvision_resnet_features(state, images_nchw, depth):
  """torchvision.models.resnet{depth} up to (and without) `fc`."""
  relu = lambda x: np.maximum(x, 0.0)
  x = relu(_batch_norm(_conv2d(images_nchw, state["conv1.weight"], 2, 3), state, "bn1"))
  x = _max_pool_3x3_stride_2(x)
  blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
  for stage, count in enumerate(blocks):
    for block in range(count):
      p = f"layer{stage + 1}.{block}"
      stride = 2 if stage > 0 and block == 0 else 1
      if depth >= 50:  # Bottleneck, stride on the 3x3 (torchvision v1.5)
        y = relu(_batch_norm(_conv2d(x, state[f"{p}.conv1.weight"]), state, f"{p}.bn1"))
        y = relu(_batch_norm(_conv2d(y, state[f"{p}.conv2.weight"], stride, 1), state, f"{p}.bn2"))
        y = _batch_norm(_conv2d(y, state[f"{p}.conv3.weight"]), state, f"{p}.bn3")
      else:
        y = relu(_batch_norm(_conv2d(x, state[f"{p}.conv1.weight"], stride, 1), state, f"{p}.bn1"))
        y = _batch_norm(_conv2d(y, state[f"{p}.conv2.weight"], 1, 1), state, f"{p}.bn2")
      if f"{p}.downsample.0.weight" in state:
        x = _batch_norm(_conv2d(x, state[f"{p}.downsample.0.weight"], stride), state, f"{p}.downsample.1")
      x = relu(y + x)
  return x.mean(axis=(2, 3))


def _layer_norm(x, state, prefix):
  mean = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-6) * state[f"{prefix}.weight"] + state[f"{prefix}.bias"]


def timm_vit_features(state, images_nchw, num_heads):
  """timm's VisionTransformer (class-token pooling) up to (and without) `head`."""
  weight = state["patch_embed.proj.weight"]
  tokens = _conv2d(images_nchw, weight, weight.shape[-1], 0, state["patch_embed.proj.bias"])
  tokens = tokens.reshape(tokens.shape[0], tokens.shape[1], -1).transpose(0, 2, 1)  # flatten(2).transpose(1, 2)
  cls = np.broadcast_to(state["cls_token"], (tokens.shape[0], 1, tokens.shape[2]))
  x = np.concatenate([cls, tokens], axis=1) + state["pos_embed"]
  batch, count, width = x.shape
  head_dim = width // num_heads
  block = 0
  while f"blocks.{block}.norm1.weight" in state:
    p = f"blocks.{block}"
    qkv = _layer_norm(x, state, f"{p}.norm1") @ state[f"{p}.attn.qkv.weight"].T + state[f"{p}.attn.qkv.bias"]
    q, k, v = qkv.reshape(batch, count, 3, num_heads, head_dim).transpose(2, 0, 3, 1, 4)
    attention = scipy.special.softmax(q @ k.transpose(0, 1, 3, 2) * head_dim**-0.5, axis=-1)
    attended = (attention @ v).transpose(0, 2, 1, 3).reshape(batch, count, width)
    x = x + attended @ state[f"{p}.attn.proj.weight"].T + state[f"{p}.attn.proj.bias"]
    hidden = _layer_norm(x, state, f"{p}.norm2") @ state[f"{p}.mlp.fc1.weight"].T + state[f"{p}.mlp.fc1.bias"]
    hidden = 0.5 * hidden * (1.0 + scipy.special.erf(hidden / np.sqrt(2.0)))  # exact GELU
    x = x + hidden @ state[f"{p}.mlp.fc2.weight"].T + state[f"{p}.mlp.fc2.bias"]
    block += 1
  return _layer_norm(x, state, "norm")[:, 0]


# ---------------------------------------------------------------- the round trip


def _model_config(backbone, **overrides):
  config = ml_collections.ConfigDict({"backbone": backbone, "width_multiplier": 1.0, "stem": "imagenet", "dtype": "float32"})
  if backbone.startswith("vit"):
    config.vit = ml_collections.ConfigDict({"patch_size": 16, "image_size": 32, "position_embedding": "sincos"})
  config.update(overrides)
  return config


def _exported_run(tmp_path, model_config):
  """A workdir holding a backbone with random weights AND random BN statistics (an untrained BN
  would hide a mix-up of mean and variance), as a finished run exports it."""
  _, params, batch_stats = functional.split_module(models.make_backbone(model_config, nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: np.asarray(x) + 0.1 * rng.standard_normal(x.shape).astype(np.float32), params)
  batch_stats = {
      k: v for k, v in jax.tree_util.tree_map_with_path(
          lambda path, x: (rng.uniform(0.5, 1.5, x.shape) if "var" in jax.tree_util.keystr(path) else 0.1 * rng.standard_normal(x.shape)).astype(np.float32),
          batch_stats,
      ).items()
  }
  workdir = tmp_path / model_config.backbone
  checkpoint.export_backbone(str(workdir / "export" / "backbone"), params, batch_stats, json.dumps({"model": model_config.to_dict()}))
  return str(workdir)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "vit_small"])
def test_torch_export_matches_the_jax_forward_pass(tmp_path, backbone):
  model_config = _model_config(backbone)
  workdir = _exported_run(tmp_path, model_config)
  path = export.export(workdir, "torch")
  assert path.endswith("export/backbone.safetensors")
  state = load_file(path)
  images = np.random.default_rng(1).uniform(-1.0, 1.0, (2, 32, 32, 3)).astype(np.float32)

  module = export.load_backbone(os.path.join(workdir, "export", "backbone"))
  expected = np.asarray(module(jnp.asarray(images)))
  nchw = images.transpose(0, 3, 1, 2).astype(np.float64)
  if backbone.startswith("resnet"):
    found = torchvision_resnet_features({k: v.astype(np.float64) for k, v in state.items()}, nchw, int(backbone[6:]))
    assert state["fc.weight"].shape == (1000, expected.shape[1]) and not state["fc.weight"].any()
  else:
    found = timm_vit_features({k: v.astype(np.float64) for k, v in state.items()}, nchw, num_heads=6)
    assert state["head.weight"].shape == (1000, 384)
  # Random running statistics do not normalise the activations, which grow to ~1e5 through the
  # depth: compare relative to their scale (float32 keeps ~7 digits, the reference float64).
  scale = max(1.0, float(np.abs(expected).max()))
  np.testing.assert_allclose(found / scale, expected / scale, atol=1e-4)


def test_torch_export_key_set_is_torchvision_resnet18():
  """Every key torchvision's resnet18 has, and no other (its state_dict, listed by hand)."""
  config = _model_config("resnet18")
  _, params, batch_stats = functional.split_module(models.make_backbone(config, nnx.Rngs(0)))
  keys = set(export.torch_state_dict(config, params, batch_stats))
  bn = lambda p: {f"{p}.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
  expected = {"conv1.weight", "fc.weight", "fc.bias"} | bn("bn1")
  for stage in range(1, 5):
    for block in range(2):
      p = f"layer{stage}.{block}"
      expected |= {f"{p}.conv1.weight", f"{p}.conv2.weight"} | bn(f"{p}.bn1") | bn(f"{p}.bn2")
      if stage > 1 and block == 0:
        expected |= {f"{p}.downsample.0.weight"} | bn(f"{p}.downsample.1")
  assert keys == expected


@pytest.mark.parametrize("override, named", [({"width_multiplier": 0.5}, "width_multiplier=0.5"), ({"stem": "small"}, "stem='small'")])
def test_torch_export_refuses_settings_torchvision_lacks(override, named):
  config = _model_config("resnet18", **override)
  _, params, batch_stats = functional.split_module(models.make_backbone(config, nnx.Rngs(0)))
  with pytest.raises(UserError, match=named):
    export.torch_state_dict(config, params, batch_stats)
