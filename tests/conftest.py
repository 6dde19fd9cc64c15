"""Test set-up: 8 simulated CPU devices and a persistent compilation cache.

Both must happen before JAX initialises its backends, which is why they live here.
"""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
# The tests run tiny models for a step or two, so compiling dominates: skip most of XLA's
# optimisation passes, which cost far more time than they save here.
if os.environ.get("JAXSSL_TEST_OPTIMIZE") != "1":
  jax.config.update("jax_disable_most_optimizations", True)
# Compilation dominates the suite's time; a cache makes re-runs much faster.
_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".jax_cache"
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
