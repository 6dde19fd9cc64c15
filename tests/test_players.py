"""Adversarial methods: a second player with its own objective and optimizer in the one train step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import optim, train
from jaxssl.methods.base import Player
from tests import helpers

GENERATOR_LR = 0.05


class TugOfWar:
  """The encoder's weight w minimises L = w * g * mean(x); the generator's scalar g maximises it
  (its objective is -L), with its own plain SGD."""

  players = {"generator": Player(modules=("generator",), objective="generator", optimizer=optax.sgd(GENERATOR_LR))}

  def init(self, rng):
    del rng
    return {"encoder": {"w": jnp.ones(())}, "generator": {"g": jnp.ones(())}}, {}

  def loss(self, params, extra, batch, rng, step):
    del extra, rng, step
    value = params["encoder"]["w"] * params["generator"]["g"] * jnp.mean(batch["x"])
    return value, {"objectives": {"generator": -value}, "metrics": {"g": params["generator"]["g"]}}

  def after_update(self, state, aux):
    del aux
    return state.extra


@pytest.fixture(scope="module")
def game():
  config = helpers.tiny_byol_config(**{"optimizer.warmup_steps": 0})  # the run's optimizer, lr > 0 at once
  method = TugOfWar()
  main_tx = optim.make_optimizer(config)
  tx = optim.with_players(main_tx, method.players)
  step = jax.jit(train.make_train_step(method, tx, optim.learning_rate_schedule(config)))
  state = train.create_train_state(method, tx, jax.random.key(0))
  return method, main_tx, step, state


def test_players_move_in_opposite_directions(game):
  _, _, step, state = game
  batch = {"x": jnp.ones((4,))}
  ws, gs = [1.0], [1.0]
  for _ in range(3):
    state, metrics = step(state, batch, jax.random.key(1))
    ws.append(float(state.params["encoder"]["w"]))
    gs.append(float(state.params["generator"]["g"]))
  assert all(b < a for a, b in zip(ws, ws[1:])), ws  # the encoder lowers L
  assert all(b > a for a, b in zip(gs, gs[1:])), gs  # the generator raises it
  np.testing.assert_allclose(float(metrics["loss"]), ws[2] * gs[2], rtol=1e-6)  # main loss before the 3rd update


def test_each_player_gets_its_own_gradient_and_optimizer(game):
  method, main_tx, step, state = game
  new, _ = step(state, {"x": jnp.ones((4,))}, jax.random.key(1))
  # The generator: plain SGD on d(-L)/dg = -w = -1.
  np.testing.assert_allclose(float(new.params["generator"]["g"]), 1.0 + GENERATOR_LR, rtol=1e-6)
  # The encoder: the run's optimizer on dL/dw = g = 1 alone (the generator's objective, whose
  # gradient for w is -1, must not leak into it: the sum would be 0 and w would not move).
  encoder = {"encoder": state.params["encoder"]}
  updates, _ = main_tx.update({"encoder": {"w": jnp.ones(())}}, main_tx.init(encoder), encoder)
  expected = float(optax.apply_updates(encoder, updates)["encoder"]["w"])
  assert expected < 1.0
  np.testing.assert_allclose(float(new.params["encoder"]["w"]), expected, rtol=1e-6)


def test_a_module_belongs_to_one_player():
  with pytest.raises(ValueError, match="claimed by players 'a' and 'b'"):
    optim.module_owners({"a": Player(("x",), "a"), "b": Player(("x",), "b")})
  with pytest.raises(ValueError, match="may not be called 'main'"):
    optim.module_owners({"main": Player(("x",), "main")})
  main = optax.sgd(0.1)
  assert optim.with_players(main, {}) is main  # one-player methods keep their optimizer state
