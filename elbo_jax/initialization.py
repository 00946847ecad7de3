"""How parameters start: the weights' scheme (`model.init`) and the decoder's output bias
(`model.output_bias`).

Flax initialises every layer itself (Dense and Conv kernels LeCun normal, biases zero). A scheme
acts on that initialised parameter tree afterwards, so every model family gets it without each
module threading initialisers through, and "default" leaves the tree exactly as Flax made it.

  "default"  Flax's initialisers.
  "glorot"   Glorot & Bengio (2010)'s uniform heuristic, the initialisation of Burda et al. 2015:
             every weight matrix (the `kernel` of a Dense, Conv or ConvTranspose layer) redrawn from
             U(-a, a), a = sqrt(6 / (fan_in + fan_out)), so its variance is 2 / (fan_in + fan_out);
             a convolution's fans are its receptive field times its input / output channels.
             Biases keep Flax's zeros.
  "normal"   Kingma & Welling 2013's "random sampling from N(0, 0.01)", read as a standard
             deviation of 0.01: every kernel and every bias of those layers redrawn from it.

What a module starts at on purpose stays: a kernel it starts at zero (the full-Gaussian posterior's
off-diagonal head, so q starts diagonal) and a bias it starts away from zero (the IAF's gate). No
random draw is all zeros, so "all zero" identifies the first. Other parameters (prior means,
pseudo-inputs, flow vectors, likelihood scales) keep their own initialisers.

`model.output_bias="data_mean"` starts the Bernoulli decoder's output bias at the logit of the
training set's mean of each pixel, clipped to [0.001, 0.999], as Burda et al.'s code does
(yburda/iwae, `datasets.py`, `get_train_bias_np`): the untrained decoder then predicts the mean
image instead of 0.5 everywhere. The mean is `batching.block_mean` of the training blocks on the
device mesh, i.e. of the whole training set whichever rows a process holds.
"""

from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp

from elbo_jax.registry import Registry

OUTPUT_BIASES = ("zero", "data_mean")
# Burda et al.'s code clips the training mean to this range before taking its logit, so a pixel
# that is never (or always) on starts at a finite logit of about -+6.9.
MEAN_CLIP = 1e-3
NORMAL_STD = 0.01


def _glorot(key, path, leaf):
  if path[-1] != "kernel":
    return leaf
  receptive_field = math.prod(leaf.shape[:-2])
  fan_in, fan_out = receptive_field * leaf.shape[-2], receptive_field * leaf.shape[-1]
  limit = math.sqrt(6.0 / (fan_in + fan_out))
  new = jax.random.uniform(key, leaf.shape, leaf.dtype, -limit, limit)
  return jnp.where(jnp.all(leaf == 0), leaf, new)


def _normal(key, path, leaf):
  if path[-1] not in ("kernel", "bias"):
    return leaf
  new = NORMAL_STD * jax.random.normal(key, leaf.shape, leaf.dtype)
  kept = jnp.all(leaf == 0) if path[-1] == "kernel" else jnp.any(leaf != 0)
  return jnp.where(kept, leaf, new)


# Schemes: (key, path of names, leaf) -> the leaf's new value; "default" keeps the tree as it is.
SCHEMES = Registry("model.init")
SCHEMES.register("default")(None)
SCHEMES.register("glorot")(_glorot)
SCHEMES.register("normal")(_normal)


def initialize(params, key, scheme: str):
  """The params pytree (from `model.init`) with its weights redrawn by `scheme`.

  Each leaf draws from `fold_in(key, i)`, i its position in the flattened tree, so a scheme's
  draws do not depend on the compute dtype or on which other leaves it redraws.
  """
  redraw = SCHEMES.get(scheme)
  if redraw is None:
    return params
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  return flax.traverse_util.unflatten_dict({
      path: redraw(jax.random.fold_in(key, i), path, leaf)
      for i, (path, leaf) in enumerate(flat.items())})


def output_logits(train_mean):
  """logit(clip(mean, MEAN_CLIP, 1 - MEAN_CLIP)): train_mean [*data_shape] -> the same shape."""
  p = jnp.clip(jnp.asarray(train_mean, jnp.float32), MEAN_CLIP, 1 - MEAN_CLIP)
  return jnp.log(p) - jnp.log1p(-p)


def set_output_bias(model, params, logits):
  """params with the decoder's output bias (at `model.output_bias_path`) set to logits
  [*data_shape], flattened to the bias's shape."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  path = ("params", *model.output_bias_path)
  flat[path] = jnp.reshape(logits, flat[path].shape).astype(flat[path].dtype)
  return flax.traverse_util.unflatten_dict(flat)
