"""jaxssl: self-supervised visual, video and audio-visual representation learning in JAX."""

__version__ = "0.1.0"
