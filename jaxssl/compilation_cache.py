"""The persistent compilation cache that every entry point turns on before it compiles anything.

XLA's compile of a train step takes 10-30 s on a CPU; with the cache, a second run of the same
config (a resume, a re-run with another seed, the benchmark) loads the executables instead.
"""

from __future__ import annotations

import os

# Where compiled executables are kept unless JAXSSL_COMPILATION_CACHE names another directory
# (e.g. a shared disk for a pod, so every host reuses the first host's compiles).
DEFAULT_DIRECTORY = os.path.join("~", ".cache", "jaxssl", "jax")


def use_persistent_compilation_cache(directory: str | None = None) -> str:
  """Points JAX's persistent cache at `directory` (or the default) and caches every executable.

  Must run before the first compilation. Returns the directory used.
  """
  import jax  # pylint: disable=g-import-not-at-top

  directory = os.path.expanduser(directory or os.environ.get("JAXSSL_COMPILATION_CACHE") or DEFAULT_DIRECTORY)
  jax.config.update("jax_compilation_cache_dir", directory)
  # JAX skips executables that compiled in under a second; a run's evaluation and augmentation
  # functions are each that small, but together they cost seconds of start-up, so keep them all.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory
