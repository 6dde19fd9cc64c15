"""The numerical environment a result was measured in, and a check against the pinned versions.

Short CPU runs sit close to the point where a method takes off, so a different jaxlib, another
CPU instruction set or another XLA flag can decide whether a preset learns at all. Every
`eval/summary.json` records `describe()`, and `experiments/presets.py` refuses to publish a
number measured with library versions other than those in `constraints.txt`.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re

# The packages whose versions change the floating-point path of a run.
NUMERICAL_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "grain", "scikit-learn")

# CPU features XLA's CPU backend picks its kernels by; a different set means other rounding.
_CPU_FEATURES = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")


def package_versions(packages=NUMERICAL_PACKAGES) -> dict[str, str | None]:
  versions = {}
  for name in packages:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def _cpu() -> dict[str, object]:
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
          break
  except OSError:  # not Linux: the model name from platform is all we know
    pass
  return {"model": model, "features": [f for f in _CPU_FEATURES if f in flags], "cores": os.cpu_count()}


def describe() -> dict[str, object]:
  """Versions, devices, CPU and the XLA flags of this process (JAX must be importable)."""
  import jax

  devices = jax.devices()
  return {
      "python": platform.python_version(),
      "packages": package_versions(),
      "backend": jax.default_backend(),
      "device_kind": devices[0].device_kind,
      "device_count": len(devices),
      "process_count": jax.process_count(),
      "cpu": _cpu(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def read_constraints(path: str) -> dict[str, str]:
  """`name==version` pins of a pip constraints file, names normalised as pip does."""
  pins = {}
  with open(path) as f:
    for line in f:
      line = line.split("#", 1)[0].strip()
      match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
      if match:
        pins[_normalise(match.group(1))] = match.group(2)
  return pins


def _normalise(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def unpinned_packages(pins: dict[str, str], installed: dict[str, str | None]) -> list[str]:
  """One line per numerical package whose installed version differs from its pin."""
  problems = []
  for name, version in installed.items():
    pinned = pins.get(_normalise(name))
    if pinned is not None and version != pinned:
      problems.append(f"{name} {version or 'not installed'} (constraints.txt pins {pinned})")
  return problems


# Dense bfloat16 peak FLOP/s of one JAX device, from the vendors' data sheets (a TPU v2 or v3 chip
# is two devices, later TPUs one per chip): the denominator of model FLOPs utilisation. TPU kinds
# are matched exactly, GPU models as a word of the device kind ('NVIDIA A100-SXM4-40GB').
_TPU_PEAK_BF16_FLOPS = {
    "TPU v2": 22.5e12, "TPU v3": 61.5e12, "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12,
    "TPU v5": 459e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
}
_GPU_PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "V100": 125e12, "L4": 121e12, "T4": 65e12}


def peak_flops_per_device(device_kind: str) -> float | None:
  """Dense bfloat16 peak FLOP/s of a device of `device_kind` (`jax.devices()[0].device_kind`),
  or None for a kind not in the tables (a CPU, an unlisted accelerator)."""
  if device_kind in _TPU_PEAK_BF16_FLOPS:
    return _TPU_PEAK_BF16_FLOPS[device_kind]
  for model in sorted(_GPU_PEAK_BF16_FLOPS, key=len, reverse=True):  # 'H100 PCIe' before 'H100'
    if re.search(rf"\b{re.escape(model)}\b", device_kind):
      return _GPU_PEAK_BF16_FLOPS[model]
  return None


def model_flops_utilisation(flops_per_device_step: float, step_seconds: float, device_kind: str) -> float | None:
  """The fraction of the device's peak the step achieves: XLA's FLOPs of one device's program,
  per second of step, over `peak_flops_per_device`; None when the peak is not known."""
  peak = peak_flops_per_device(device_kind)
  return None if peak is None else flops_per_device_step / step_seconds / peak
