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
