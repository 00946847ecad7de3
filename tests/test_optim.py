"""Optimisers from the `optimizer` config against their update rules written out by hand."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from elbo_jax import optim
from elbo_jax.config import default_config


def _optimizer(name, learning_rate=0.1):
  cfg = ml_collections.ConfigDict(default_config().optimizer.to_dict())
  cfg.name, cfg.learning_rate = name, learning_rate
  return optim.make_optimizer(cfg, steps_per_epoch=10, total_steps=100)


def _run(optimizer, grads_per_step, params):
  state, updates = optimizer.init(params), []
  for grads in grads_per_step:
    update, state = optimizer.update(grads, state, params)
    updates.append(update)
  return updates


def test_adam_normgrad_is_adam_on_gradients_divided_by_their_tensor_norm():
  # Two steps whose gradients differ in scale: Adam alone is nearly scale-invariant only for a
  # constant scale, so the normalisation changes the second update.
  params = {"w": jnp.zeros(2), "b": jnp.zeros(())}
  grads = [{"w": jnp.array([3.0, 4.0]), "b": jnp.array(-2.0)},
           {"w": jnp.array([30.0, 0.0]), "b": jnp.array(0.5)}]
  lr, b1, b2, eps, norm_eps = 0.1, 0.9, 0.999, 1e-8, 1e-7
  # By hand: w's gradients normalised are [0.6, 0.8] (norm 5) and [1, 0] (norm 30); b's are -1
  # and +1 (up to the 1e-7 in the denominator).
  normalised = {"w": [np.array([3.0, 4.0]) / (5 + norm_eps),
                      np.array([30.0, 0.0]) / (30 + norm_eps)],
                "b": [np.array(-2.0) / (2 + norm_eps), np.array(0.5) / (0.5 + norm_eps)]}
  expected = {}
  for name, (g1, g2) in normalised.items():
    m1, v1 = (1 - b1) * g1, (1 - b2) * g1**2
    m2, v2 = b1 * m1 + (1 - b1) * g2, b2 * v1 + (1 - b2) * g2**2
    expected[name] = [-lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
                      for t, m, v in ((1, m1, v1), (2, m2, v2))]
  updates = _run(_optimizer("adam_normgrad", lr), grads, params)
  for name in params:
    for t in range(2):
      np.testing.assert_allclose(updates[t][name], expected[name][t], rtol=1e-4)  # float32
  # Without the normalisation the second step differs by ~20% (the check above can fail).
  plain = _run(_optimizer("adam", lr), grads, params)
  assert not np.allclose(plain[1]["w"], expected["w"][1], rtol=1e-3)


def test_normalize_per_tensor_gives_unit_norm_tensors():
  grads = {"a": jnp.arange(12.0).reshape(3, 4), "b": jnp.array([-5.0])}
  out, _ = optim.normalize_per_tensor().update(grads, optax.EmptyState())
  for name, g in grads.items():
    norm = float(jnp.linalg.norm(g.ravel()))
    np.testing.assert_allclose(out[name], g / (norm + 1e-7), rtol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(out[name].ravel()), 1.0, rtol=1e-6)


def test_adagrad_divides_the_l2_penalised_gradient_by_the_root_of_its_summed_squares():
  c = default_config().optimizer
  c.name, c.learning_rate, c.weight_decay, c.eps = "adagrad", 0.1, 0.01, 1e-8
  optimizer = optim.make_optimizer(c, steps_per_epoch=10, total_steps=100)
  params = jnp.array([1.0, -2.0, 0.5])
  grads = [jnp.array([0.3, 0.1, -0.2]), jnp.array([-0.5, 0.4, 0.0])]
  state = optimizer.init(params)
  w, sum_sq = np.asarray(params, np.float64), np.zeros(3)
  for g in grads:
    updates, state = optimizer.update(g, state, params)
    params = params + updates
    # Duchi et al.: G += g^2, w -= lr g / sqrt(G), g the gradient of loss + wd/2 |w|^2.
    g_penalised = np.asarray(g, np.float64) + 0.01 * w
    sum_sq += g_penalised**2
    w = w - 0.1 * g_penalised / np.sqrt(sum_sq + 1e-8)
    np.testing.assert_allclose(params, w, rtol=1e-6)
