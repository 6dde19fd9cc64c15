"""Data: offline built-in datasets, grain sources, host-side views and pipelines.

Import the submodules directly, e.g. `from jaxssl.data import pipeline, sources`.
"""
