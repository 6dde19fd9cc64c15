"""The jaxssl command line, as one process of a multi-process test run.

With JAXSSL_TEST_CRASH_AT_SAVE=N this process dies abruptly (no cleanup, like a lost host) when
the run reaches the checkpoint of step N, before any of it is written.
"""

import os

_CRASH_AT = int(os.environ.get("JAXSSL_TEST_CRASH_AT_SAVE", "0"))

if _CRASH_AT:
  from jaxssl import checkpoint

  _save = checkpoint.Checkpointer.save

  def _crashing_save(self, step, *args, **kwargs):
    if step == _CRASH_AT:
      os._exit(17)
    return _save(self, step, *args, **kwargs)

  checkpoint.Checkpointer.save = _crashing_save

from jaxssl import main  # noqa: E402

main.run()
