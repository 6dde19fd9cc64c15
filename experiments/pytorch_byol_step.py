"""Times one BYOL training step in PyTorch (eager, CPU), built to match jaxssl's JAX step.

Mirrors jaxssl/models/resnet.py (ResNet-18), jaxssl/models/heads.py (MLPHead),
jaxssl/methods/byol.py and configs/byol.py ('quick' preset):
  - online network: backbone -> projector -> predictor; EMA target: backbone -> projector,
    forward only (no grad), in train mode (batch statistics, its own running stats);
  - each view gets its own forward pass (own BN batch statistics), online then target;
  - loss: sum over the two views of mean_b ||norm(q(v)) - norm(z'(v'))||^2;
  - online linear probe (10 classes) on batch-standardised stop-gradient features of view 0;
  - SGD, momentum 0.9, weight decay 1e-4 on weight matrices / conv kernels only, warm-up +
    cosine learning rate; the probe has its own SGD (lr 0.5, momentum 0.9, no weight decay);
  - after the update: target <- tau * target + (1 - tau) * online (parameters only).
Inputs are two views of random uint8 images [B, H, W, 3] (no data loader, no augmentation).

  bash experiments/make_pytorch_env.sh   # once: PyTorch in .venv-torch, outside jaxssl's dependencies
  .venv-torch/bin/python experiments/pytorch_byol_step.py --width 0.25 --stem imagenet --batch 128 --steps 10
"""

import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# configs/byol.py, preset 'quick'.
BASE_LR, WEIGHT_DECAY, MOMENTUM, WARMUP_STEPS, TOTAL_STEPS, BASE_TAU = 0.2, 1e-4, 0.9, 20, 250, 0.99
PROBE_LR, NUM_CLASSES = 0.5, 10  # jaxssl.optim.PROBE_LEARNING_RATE; benchmark.py's make_method(config, 10)
STEMS = {"imagenet": (7, 2, True), "half": (3, 2, False), "small": (3, 1, False)}  # kernel, stride, max-pool
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def conv(cin, cout, kernel, stride):
  """Bias-free conv, 'same'-style padding k // 2, He-normal (fan_out) init as in resnet.py."""
  layer = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False)
  nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
  return layer


def bn(features, dims=2):
  # flax momentum 0.9 == PyTorch momentum 0.1; epsilon 1e-5.
  return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(features, eps=1e-5, momentum=0.1)


def linear(cin, cout):
  """nnx.Linear's init: LeCun truncated normal kernel, zero bias."""
  layer = nn.Linear(cin, cout)
  std = (1.0 / cin) ** 0.5 / 0.87962566103423978  # the std of a unit normal truncated at +-2
  nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
  nn.init.zeros_(layer.bias)
  return layer


class BasicBlock(nn.Module):
  def __init__(self, cin, width, stride):
    super().__init__()
    self.conv1, self.bn1 = conv(cin, width, 3, stride), bn(width)
    self.conv2, self.bn2 = conv(width, width, 3, 1), bn(width)
    self.shortcut = None if stride == 1 and cin == width else nn.Sequential(conv(cin, width, 1, stride), bn(width))

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(nn.Module):
  """ResNet-18 encoder returning globally average-pooled features [B, num_features]."""

  def __init__(self, width_multiplier, stem):
    super().__init__()
    base = max(1, int(round(64 * width_multiplier)))
    kernel, stride, pool = STEMS[stem]
    self.stem = nn.Sequential(conv(3, base, kernel, stride), bn(base), nn.ReLU(), *([nn.MaxPool2d(3, 2, 1)] if pool else []))
    blocks, cin = [], base
    for stage in range(4):
      for index in range(2):
        blocks.append(BasicBlock(cin, base * 2**stage, 2 if stage > 0 and index == 0 else 1))
        cin = base * 2**stage
    self.blocks, self.num_features = nn.Sequential(*blocks), cin

  def forward(self, x):
    return self.blocks(self.stem(x)).mean(dim=(2, 3)).float()  # bf16 -> f32 as in resnet.py


def mlp_head(cin, hidden, cout):
  """heads.MLPHead: Linear -> BN -> ReLU -> Linear."""
  return nn.Sequential(linear(cin, hidden), bn(hidden, dims=1), nn.ReLU(), linear(hidden, cout))


def count(*modules):
  return sum(p.numel() for m in modules for p in m.parameters())


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--width", type=float, default=0.25)
  parser.add_argument("--stem", choices=tuple(STEMS), default="imagenet")
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--projector_hidden", type=int, default=4096)
  parser.add_argument("--projection", type=int, default=256)
  parser.add_argument("--predictor_hidden", type=int, default=4096)
  parser.add_argument("--steps", type=int, default=10, help="timed steps")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
  parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
  parser.add_argument("--bf16", action="store_true", help="torch.autocast('cpu', bfloat16); parameters stay f32")
  parser.add_argument("--channels_last", action="store_true", help="NHWC memory format (jaxssl is NHWC)")
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  fmt = torch.channels_last if args.channels_last else torch.contiguous_format

  backbone = ResNet18(args.width, args.stem).to(memory_format=fmt)
  projector = mlp_head(backbone.num_features, args.projector_hidden, args.projection)
  predictor = mlp_head(args.projection, args.predictor_hidden, args.projection)
  probe = linear(backbone.num_features, NUM_CLASSES)
  # The target starts as an exact copy of the online encoder and projector and gets no gradients.
  target_backbone, target_projector = ResNet18(args.width, args.stem).to(memory_format=fmt), mlp_head(backbone.num_features, args.projector_hidden, args.projection)
  target_backbone.load_state_dict(backbone.state_dict()), target_projector.load_state_dict(projector.state_dict())
  target_params = [*target_backbone.parameters(), *target_projector.parameters()]
  online_params = [*backbone.parameters(), *projector.parameters()]
  for p in target_params:
    p.requires_grad_(False)
  print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ResNet-18 x{args.width} {args.stem} stem, "
        f"{args.image_size} px, batch {args.batch}, {'bf16 autocast' if args.bf16 else 'float32'}")
  print(f"parameters: online {count(backbone, projector, predictor, probe)} (backbone {count(backbone)}, projector "
        f"{count(projector)}, predictor {count(predictor)}, probe {count(probe)}); target {count(target_backbone, target_projector)}")

  # Weight decay on tensors with ndim > 1 only (optim.decay_mask); the probe in its own group.
  ssl_params = [*online_params, *predictor.parameters()]
  optimizer = torch.optim.SGD([
      dict(params=[p for p in ssl_params if p.ndim > 1], weight_decay=WEIGHT_DECAY),
      dict(params=[p for p in ssl_params if p.ndim <= 1], weight_decay=0.0),
      dict(params=list(probe.parameters()), lr=PROBE_LR, weight_decay=0.0),
  ], lr=0.0, momentum=MOMENTUM, foreach=True)
  peak_lr = BASE_LR * args.batch / 256

  mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
  shape = (args.batch, args.image_size, args.image_size, 3)
  views_u8 = [torch.randint(0, 256, shape, dtype=torch.uint8) for _ in range(2)]
  labels = torch.randint(0, NUM_CLASSES, (args.batch,))

  def l2_normalize(x):
    return F.normalize(x.float(), dim=-1, eps=1e-12)

  def train_step(step):
    progress = min(max((step - WARMUP_STEPS) / (TOTAL_STEPS - WARMUP_STEPS), 0.0), 1.0)
    lr = peak_lr * step / WARMUP_STEPS if step < WARMUP_STEPS else peak_lr * 0.5 * (1 + math.cos(math.pi * progress))
    optimizer.param_groups[0]["lr"] = optimizer.param_groups[1]["lr"] = lr
    # uint8 NHWC -> float NCHW in [0, 1], then ImageNet mean/std (augment.normalize).
    views = [((v.permute(0, 3, 1, 2).float() / 255.0 - mean) / std).contiguous(memory_format=fmt) for v in views_u8]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
      features, online, target = [], [], []
      for x in views:
        features.append(backbone(x))
        online.append(projector(features[-1]))
        with torch.no_grad():
          target.append(target_projector(target_backbone(x)))
      predictions = [predictor(z) for z in online]
    # Symmetric normalised MSE (losses.byol_loss), in float32.
    loss = sum(((l2_normalize(q) - l2_normalize(z)) ** 2).sum(-1).mean() for q, z in zip(predictions, target[::-1]))
    # Linear probe on batch-standardised stop-gradient features / sqrt(D), in float32 (no dtype in jaxssl).
    f = features[0].detach()
    f = (f - f.mean(0)) * torch.rsqrt(f.var(0, unbiased=False) + 1e-5) / math.sqrt(f.shape[-1])
    logits = probe(f)
    total = loss + F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))  # metrics['grad_norm']
    optimizer.step()
    # EMA after the update, with tau at the new step count (byol.after_update).
    tau = 1 - (1 - BASE_TAU) * (math.cos(math.pi * min((step + 1) / TOTAL_STEPS, 1.0)) + 1) / 2
    with torch.no_grad():
      torch._foreach_lerp_(target_params, online_params, 1.0 - tau)
      embedding_std = l2_normalize(online[0]).std(0, unbiased=False).mean()
      accuracy = (logits.argmax(-1) == labels).float().mean()
    return torch.stack([total.detach(), loss.detach(), grad_norm, embedding_std, accuracy])

  for step in range(args.warmup):
    metrics = train_step(step)
  start = time.perf_counter()
  for step in range(args.warmup, args.warmup + args.steps):
    metrics = train_step(step)
  seconds = (time.perf_counter() - start) / max(args.steps, 1)
  total, loss, grad_norm, embedding_std, accuracy = metrics.tolist()
  print(f"last step: loss {total:.4f} (byol {loss:.4f}), grad_norm {grad_norm:.3f}, embedding_std {embedding_std:.4f}")
  print(f"train step: {seconds * 1000:.0f} ms/step, {args.batch / seconds:.1f} images/s "
        f"(mean of {args.steps} steps after {args.warmup} warm-up)")


if __name__ == "__main__":
  main()
