"""Optimisers and learning-rate schedules from the `optimizer` config, as optax chains.

The "burda" schedule is Burda et al. 2015's: for i = 0..7, 3^i epochs at 1e-3 * 10^(-i/7)
(3,280 epochs in all), scaled so that `learning_rate` is the first stage's rate.
"""

from __future__ import annotations

import optax

from elbo_jax.registry import ConfigError, Registry

OPTIMIZERS = Registry("optimizer.name")
OPTIMIZERS.register("adam")(lambda c, lr: optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps))
OPTIMIZERS.register("adamw")(
    lambda c, lr: optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay))
OPTIMIZERS.register("sgd")(lambda c, lr: optax.sgd(lr, momentum=c.b1 or None))

BURDA_STAGES = 8


def burda_schedule(learning_rate: float, steps_per_epoch: int) -> optax.Schedule:
  # Each boundary multiplies the rate by 10^(-1/7); optax composes the scales cumulatively.
  boundaries, epochs = {}, 0
  for i in range(BURDA_STAGES - 1):
    epochs += 3**i
    boundaries[epochs * steps_per_epoch] = 10 ** (-1 / 7)
  return optax.piecewise_constant_schedule(learning_rate, boundaries)


def burda_num_epochs() -> int:
  return sum(3**i for i in range(BURDA_STAGES))


SCHEDULES = Registry("optimizer.schedule")
SCHEDULES.register("constant")(lambda c, spe, total: optax.constant_schedule(c.learning_rate))
SCHEDULES.register("cosine")(
    lambda c, spe, total: optax.warmup_cosine_decay_schedule(
        0.0, c.learning_rate, c.warmup_steps, max(total, c.warmup_steps + 1)))
SCHEDULES.register("burda")(lambda c, spe, total: burda_schedule(c.learning_rate, spe))


def make_optimizer(cfg, steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
  """The optimiser chain: optional global-norm clipping, then the named optimiser and schedule."""
  if cfg.learning_rate <= 0:
    raise ConfigError(f"optimizer.learning_rate={cfg.learning_rate!r} must be positive")
  schedule = SCHEDULES.get(cfg.schedule)(cfg, steps_per_epoch, total_steps)
  chain = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
  # One flat parameter vector: a few large elementwise updates instead of one per array.
  return optax.chain(*chain, OPTIMIZERS.get(cfg.name)(cfg, schedule))
