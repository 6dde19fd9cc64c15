"""How fast can the config's backbone learn its data WITH labels? A ceiling for short SSL runs.

Trains the config's backbone and a linear classifier end to end with cross-entropy (SGD with
momentum, constant learning rate, un-augmented training images) and prints the test accuracy.
If labels cannot lift the network far above raw pixels in N steps, no self-supervised method
will in N steps either; that is how the built-in quickstart data was chosen.

  python experiments/supervised_check.py --config=configs/byol.py:quick --steps=200
  python experiments/supervised_check.py --config=configs/byol.py --config.data.name=builtin:textured_digits
  python experiments/supervised_check.py --config=configs/brave.py:quick --batch_size=32   # narrow clips
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from jaxssl import compilation_cache, inputs, methods
from jaxssl.transforms import augment
from jaxssl.data import pipeline
from jaxssl.data import sources
from jaxssl.data import video

_CONFIG = config_flags.DEFINE_config_file("config", None, "Method config (its model and data are used).", lock_config=False)
_STEPS = flags.DEFINE_integer("steps", 200, "Training steps.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.1, "SGD learning rate (momentum 0.9).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Training batch size.")


def _arrays(config, split: str) -> dict[str, np.ndarray]:
  """{'image': uint8 images or, for video configs, the narrow view's centred clips; 'label'}."""
  if config.data.get("kind") == "video":
    arrays = video.load_clip_eval_arrays(video.make_video_source(config.data, split), inputs.clip_view_spec(config.brave.narrow))
    return {"image": arrays["clip"], "label": arrays["label"]}
  source = sources.make_source(config.data, split)
  return pipeline.load_eval_arrays(source, config.data.image_size, None)


def main(argv) -> None:
  del argv
  compilation_cache.use_persistent_compilation_cache()
  config = _CONFIG.value
  train, test = _arrays(config, config.data.train_split), _arrays(config, config.data.eval_split)
  num_classes = int(train["label"].max()) + 1
  method = methods.make_method(config, num_classes)
  params, extra = method.init(jax.random.key(config.seed))
  # The method's own backbone and online-probe layer, trained together.
  variables = (params["backbone"], params["probe"])
  stats = extra["batch_stats"]["backbone"]
  tx = optax.sgd(_LEARNING_RATE.value, momentum=0.9)
  opt_state = tx.init(variables)

  # Video methods may feed their backbone something derived from the clip (e.g. frame differences).
  backbone_input = getattr(method, "narrow_input", lambda x: x)

  def logits_fn(variables, stats, images, train):
    features, new_stats = method.backbone(variables[0], stats, backbone_input(augment.normalize(images)), train=train)
    logits, _ = method.probe(variables[1], {}, features, train=train)
    return logits, new_stats

  def loss_fn(variables, stats, images, labels):
    logits, new_stats = logits_fn(variables, stats, images, True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (new_stats, jnp.mean(jnp.argmax(logits, -1) == labels))

  @jax.jit
  def step(variables, opt_state, stats, images, labels):
    (loss, (stats, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables, stats, images, labels)
    updates, opt_state = tx.update(grads, opt_state, variables)
    return optax.apply_updates(variables, updates), opt_state, stats, loss, accuracy

  predict = jax.jit(lambda variables, stats, images: jnp.argmax(logits_fn(variables, stats, images, False)[0], -1))
  rng = np.random.default_rng(config.seed)
  start = time.time()
  for i in range(1, _STEPS.value + 1):
    index = rng.integers(0, len(train["label"]), _BATCH_SIZE.value)
    variables, opt_state, stats, loss, accuracy = step(variables, opt_state, stats, train["image"][index], train["label"][index])
    if i % 50 == 0 or i == _STEPS.value:
      print(f"step {i}: loss {float(loss):.3f}, batch accuracy {100 * float(accuracy):.1f}% ({time.time() - start:.0f} s)", flush=True)
  predictions = np.concatenate([
      np.asarray(predict(variables, stats, test["image"][i : i + 500])) for i in range(0, len(test["label"]), 500)
  ])
  print(f"{config.data.name}: supervised test accuracy after {_STEPS.value} steps: {100 * np.mean(predictions == test['label']):.1f}%")


if __name__ == "__main__":
  app.run(main)
