"""Optimisers and learning-rate schedules from the `optimizer` config, as optax chains.

A schedule is a shape with peak 1 scaled by `learning_rate`, so the rate may be a traced value:
replicas of one vectorised program (`train.train_group`) can differ in learning rate and weight
decay. The "burda" schedule is Burda et al. 2015's: for i = 0..7, 3^i epochs at
1e-3 * 10^(-i/7) (3,280 epochs in all), with `learning_rate` the first stage's rate.

"adam_normgrad" is Tomczak & Welling's AdamNormGrad (jmtomczak/vae_vampprior,
utils/optimizer.py): Adam on each parameter tensor's gradient divided by (its L2 norm + 1e-7).
Their PyTorch Adam adds `eps` to sqrt(v) before the bias correction, optax after it: the
denominators differ by at most eps / sqrt(1 - b2^t) (3e-7 at the first step for eps = 1e-8),
far below a normalised gradient's entries.

`weight_decay` is read by "adamw" (decoupled, scaled by the rate) and "adagrad" (an L2 penalty
added to the gradient); the others ignore it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from elbo_jax.registry import Registry

NORMGRAD_EPS = 1e-7  # Tomczak & Welling's AdamNormGrad


def normalize_per_tensor(eps: float = NORMGRAD_EPS) -> optax.GradientTransformation:
  """Divides each gradient tensor (pytree leaf) by its L2 norm over all its entries plus eps."""
  return optax.stateless(lambda updates, params: jax.tree.map(
      lambda g: g / (jnp.sqrt(jnp.sum(jnp.square(g))) + eps), updates))


OPTIMIZERS = Registry("optimizer.name")
OPTIMIZERS.register("adam")(
    lambda c, lr, wd: optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps))
OPTIMIZERS.register("adamw")(
    lambda c, lr, wd: optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=wd))
OPTIMIZERS.register("adam_normgrad")(
    lambda c, lr, wd: optax.chain(normalize_per_tensor(),
                                  optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps)))
OPTIMIZERS.register("sgd")(lambda c, lr, wd: optax.sgd(lr, momentum=c.b1 or None))
# Duchi et al.'s Adagrad, its sum of squared gradients started at zero, on the gradient of the loss
# plus wd/2 |params|^2: an L2 penalty (as Kingma & Welling 2013's weight decay), not decoupled.
OPTIMIZERS.register("adagrad")(
    lambda c, lr, wd: optax.chain(optax.add_decayed_weights(wd),
                                  optax.adagrad(lr, initial_accumulator_value=0.0, eps=c.eps)))

BURDA_STAGES = 8


def burda_shape(steps_per_epoch: int) -> optax.Schedule:
  # Each boundary multiplies the rate by 10^(-1/7); optax composes the scales cumulatively.
  boundaries, epochs = {}, 0
  for i in range(BURDA_STAGES - 1):
    epochs += 3**i
    boundaries[epochs * steps_per_epoch] = 10 ** (-1 / 7)
  return optax.piecewise_constant_schedule(1.0, boundaries)


def burda_num_epochs() -> int:
  return sum(3**i for i in range(BURDA_STAGES))


# Schedule shapes, peak 1: (optimizer config, steps per epoch, total steps) -> step -> factor.
SCHEDULES = Registry("optimizer.schedule")
SCHEDULES.register("constant")(lambda c, spe, total: optax.constant_schedule(1.0))
SCHEDULES.register("cosine")(
    lambda c, spe, total: optax.warmup_cosine_decay_schedule(
        0.0, 1.0, c.warmup_steps, max(total, c.warmup_steps + 1)))
SCHEDULES.register("burda")(lambda c, spe, total: burda_shape(spe))


def make_optimizer(cfg, steps_per_epoch: int, total_steps: int, learning_rate=None,
                   weight_decay=None) -> optax.GradientTransformation:
  """The optimiser chain: optional global-norm clipping, then the named optimiser and schedule.

  learning_rate, weight_decay: override `cfg`'s values; may be traced scalars.
  """
  lr = cfg.learning_rate if learning_rate is None else learning_rate
  wd = cfg.weight_decay if weight_decay is None else weight_decay
  shape = SCHEDULES.get(cfg.schedule)(cfg, steps_per_epoch, total_steps)
  chain = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
  return optax.chain(*chain, OPTIMIZERS.get(cfg.name)(cfg, lambda step: lr * shape(step), wd))
