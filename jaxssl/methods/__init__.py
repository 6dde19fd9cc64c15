"""Self-supervised methods, looked up by `config.method`."""

from __future__ import annotations

import importlib
import inspect

import ml_collections

from jaxssl.methods.base import Method, TrainState  # noqa: F401

# config.method -> "module:class"; modules are imported only when their method is used.
REGISTRY = {
    "byol": "jaxssl.methods.byol:BYOL",
    "brave": "jaxssl.methods.brave:BraVe",
    "gdt": "jaxssl.methods.gdt:GDT",
    "videomoco": "jaxssl.methods.videomoco:VideoMoCo",
    "barlow_twins": "jaxssl.methods.barlow_twins:BarlowTwins",
    "simsiam": "jaxssl.methods.simsiam:SimSiam",
    "vicreg": "jaxssl.methods.vicreg:VICReg",
    "swav": "jaxssl.methods.swav:SwAV",
    "dino": "jaxssl.methods.dino:DINO",
    "moco": "jaxssl.methods.moco:MoCo",
    "npid": "jaxssl.methods.npid:NPID",
    "simclr": "jaxssl.methods.simclr:SimCLR",
    "moco_v3": "jaxssl.methods.moco_v3:MoCoV3",
    "rotnet": "jaxssl.methods.rotnet:RotNet",
    "jigsaw": "jaxssl.methods.jigsaw:Jigsaw",
    "exemplar": "jaxssl.methods.exemplar:Exemplar",
    "relative_position": "jaxssl.methods.relative_position:RelativePosition",
    "ssl_robustness": "jaxssl.methods.ssl_robustness:SSLRobustness",
    "rotation_decoupling": "jaxssl.methods.rotation_decoupling:RotationDecoupling",
    "colorization": "jaxssl.methods.colorization:Colorization",
    "context_encoder": "jaxssl.methods.context_encoder:ContextEncoder",
    "transitive_invariance": "jaxssl.methods.transitive_invariance:TransitiveInvariance",
    "multitask": "jaxssl.methods.multitask:MultiTask",
}


def method_class(name: str) -> type:
  """The class registered for `config.method` = `name` (imported, not constructed)."""
  if name not in REGISTRY:
    raise ValueError(f"config.method '{name}' is not known; choose one of {sorted(REGISTRY)}.")
  module_name, class_name = REGISTRY[name].split(":")
  return getattr(importlib.import_module(module_name), class_name)


def is_video_method(name: str) -> bool:
  """Whether the method named `name` trains (and exports) a video backbone; False for a name that
  is not a method (an export written with only its model config)."""
  return name in REGISTRY and getattr(method_class(name), "eval_input_key", "image") == "clip"


def make_method(config: ml_collections.ConfigDict, num_classes: int = 0, num_train_examples: int = 0) -> Method:
  """The method named by `config.method`; `num_classes` > 0 adds an online linear probe.

  `num_train_examples` (records trained on) reaches the methods that size state by the dataset
  (a memory bank), so no method reads the data itself.
  """
  cls = method_class(config.method)
  if "num_train_examples" in inspect.signature(cls).parameters:
    return cls(config, num_classes, num_train_examples=num_train_examples)
  return cls(config, num_classes)
