"""jaxssl: self-supervised visual, video and audio-visual representation learning in JAX."""

__version__ = "0.1.0"


def load_backbone(path: str):
  """The backbone a run exported to `path` (WORKDIR/export/backbone) as a Flax NNX module in eval
  mode; see `jaxssl.export`."""
  from jaxssl import export  # pylint: disable=g-import-not-at-top  (keeps `import jaxssl` light)

  return export.load_backbone(path)
