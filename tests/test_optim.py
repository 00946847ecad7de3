"""Optimisers from the `optimizer` config against their update rules written out by hand."""

import jax.numpy as jnp
import numpy as np

from elbo_jax.config import default_config
from elbo_jax.optim import make_optimizer


def test_adagrad_divides_the_l2_penalised_gradient_by_the_root_of_its_summed_squares():
  c = default_config().optimizer
  c.name, c.learning_rate, c.weight_decay, c.eps = "adagrad", 0.1, 0.01, 1e-8
  optimizer = make_optimizer(c, steps_per_epoch=10, total_steps=100)
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
