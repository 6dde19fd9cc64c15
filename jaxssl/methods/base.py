"""The contract every method implements, and the train state they share.

A method is a set of pure functions of explicit state. `train.py` owns the only train step:
it differentiates `loss` with respect to `params`, applies the optimizer, then calls
`after_update` for everything that is not a gradient step (EMA targets, queues, centres).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
  """Everything a run needs to continue; a plain pytree, nothing hidden.

  Attributes:
    step: number of optimizer steps taken.
    params: trainable parameters (nested dicts), the only thing differentiated.
    opt_state: the optimizer's state.
    extra: non-gradient state: batch statistics, target networks, queues, centres, ...
  """

  step: jax.Array
  params: Any
  opt_state: Any
  extra: Any


@dataclasses.dataclass(frozen=True)
class Player:
  """A second player of an adversarial method: top-level parameter modules that follow their own
  objective with their own optimizer, inside the same jitted step as the encoder.

  VideoMoCo's frame-dropping generator maximises the contrastive loss the encoder minimises; the
  context encoder's discriminator minimises a classification loss the inpainter tries to raise.
  A method lists its players in `players`; every top-level module no player claims belongs to the
  main player, which minimises the scalar `loss` returns. The train step differentiates each
  objective with respect to its own player's modules only, from one forward pass.

  Attributes:
    modules: the top-level keys of `params` this player owns.
    objective: the key of `aux['objectives']` (a scalar from `loss`) this player minimises; a
      player that maximises the main loss returns its negation there.
    optimizer: this player's optax transform (the run's own optimizer when None).
  """

  modules: tuple[str, ...]
  objective: str
  optimizer: optax.GradientTransformation | None = None


class Method(Protocol):
  """What `train.py` needs from a self-supervised method."""

  def init(self, rng: jax.Array) -> tuple[Any, Any]:
    """Returns (params, extra) for a fresh run."""

  def loss(self, params: Any, extra: Any, batch: dict, rng: jax.Array, step: jax.Array) -> tuple[jax.Array, dict]:
    """Returns (scalar loss, aux); aux['metrics'] is a dict of scalars to log."""

  def after_update(self, state: TrainState, aux: dict) -> Any:
    """Returns the new `extra` given the state after the optimizer step."""

  def embed(self, params: Any, extra: Any, images: jax.Array, *, train: bool = False) -> jax.Array:
    """Backbone features [B, D] of float images in [0, 1] for evaluation."""

  # Optional: `project_params(params) -> params`, applied right after each optimizer step, for
  # parameters constrained to a set (SwAV's prototypes stay unit vectors).
  # Optional: `row_sharded_extra`, paths of `extra` leaves split over devices along their first
  # axis (a queue, a memory bank); absent paths are skipped, the rest of `extra` is replicated.
  # Optional: a `num_train_examples` constructor argument, for state sized by the dataset.
  # Video methods (`eval_input_key = 'clip'`): `make_backbone(rngs)`, the NNX module a run exports
  # (`params['backbone']`), and `backbone_input(clips)`, normalised RGB clips -> its input (e.g.
  # frame differences), so the evaluation protocols can rebuild and feed an exported backbone.
  # Image methods whose backbone reads something other than the normalised RGB images (grey,
  # lightness, per-image normalisation): a classmethod `backbone_input_fn(config)`, normalised
  # images -> the backbone's input, which `embed` uses and the protocols apply to an exported backbone.
  # Optional: `players: dict[str, Player]` for adversarial methods (see `Player`); `loss` then
  # also returns each player's objective in aux['objectives'].
