"""Installs jaxssl: self-supervised representation learning in JAX."""

import setuptools

setuptools.setup(
    name="jaxssl",
    version="0.1.0",
    description="Self-supervised visual, video and audio-visual pretraining in JAX/Flax.",
    packages=setuptools.find_packages(include=["jaxssl", "jaxssl.*"]),
    python_requires=">=3.12",
    install_requires=[
        "jax>=0.12",
        "flax>=0.12.12",
        "optax",
        "orbax-checkpoint",
        "grain",
        "tensorflow-datasets",
        "ml_collections",
        "clu",
        "dm-pix",  # DeepMind's JAX image ops: colour conversions, blur, solarisation
        # clu's metric writers import TensorFlow and TensorBoard.
        "tensorflow-cpu",
        "tensorboard",
        "numpy",
        "pillow",
        "scikit-learn",
        "safetensors",  # the PyTorch-format backbone export (jaxssl.export)
        "matplotlib",
        "absl-py",
        "av",  # PyAV: decodes video files (frames and audio) for folder:<path> video sources
    ],
    extras_require={"test": ["pytest", "pytest-xdist"]},
)
