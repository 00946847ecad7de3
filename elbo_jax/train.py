"""Training: `create_train_state`, `make_train_chunk` (many jitted steps in one `lax.scan`), and
`train_and_evaluate(config, workdir)`, which trains, checkpoints, resumes and evaluates a run.

Randomness: the seed is split once into init/data/train/eval keys. A step's key is
`fold_in(train_key, step)` and an epoch's permutation `fold_in(data_key, epoch)`, so a run resumed
from a checkpoint draws exactly the numbers an uninterrupted run draws (bitwise equal on CPU).
The train step is a pure function of (state, batch, key) with the model, objective and optimiser
closed over; the config names the GLOBAL batch size, which the data mesh axis splits over devices.
"""

from __future__ import annotations

import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from elbo_jax import data as data_lib
from elbo_jax import objectives, xla
from elbo_jax.build import build_model, check_config, select_devices
from elbo_jax.optim import make_optimizer
from elbo_jax.registry import ConfigError

# Terms checked for non-finite values, in the order they are reported.
WATCHED_TERMS = ("log_px_given_z", "kl", "log_weights", "loss", "gradients")


class NonFiniteError(RuntimeError):
  """A non-finite loss or gradient with training.on_nonfinite='stop'."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  num_skipped: jax.Array


def split_seed(seed: int) -> dict:
  """The run's independent streams of randomness, all derived from one seed."""
  names = ("init", "data", "train", "eval", "sample")
  return dict(zip(names, jax.random.split(jax.random.key(seed), len(names))))


def create_train_state(model, optimizer, example, key) -> TrainState:
  """Initialises parameters from one example x: [*data_shape] and the optimiser state."""
  init_key, sample_key = jax.random.split(key)
  params = model.init(init_key, jnp.asarray(example, jnp.float32), sample_key)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), num_skipped=jnp.zeros((), jnp.int32))


def nonfinite_flags(terms: dict, grad_norm) -> jax.Array:
  """[len(WATCHED_TERMS)] booleans: which watched quantities hold a NaN or an infinity.

  The gradients are judged by their global norm, which is non-finite iff some entry is.
  """
  present = dict(terms, gradients=grad_norm)
  return jnp.stack([~jnp.all(jnp.isfinite(present[name])) if name in present
                    else jnp.asarray(False) for name in WATCHED_TERMS])


def make_train_step(per_example, optimizer, beta_fn, free_bits, dynamic_binarization, mesh):
  """Returns train_step(state, batch, key) -> (state, metrics); one SGD step on a batch."""
  batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
  vmapped = jax.vmap(per_example, in_axes=(None, 0, 0, None))

  def train_step(state, batch, key):
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    # Per-example keys, so every draw is local to the device holding the example (see xla.py).
    binarize_keys, keys = jax.random.split(key, (2, batch.shape[0]))
    if dynamic_binarization:
      # Burda et al.: a fresh binarisation every time an example is used.
      batch = jax.vmap(data_lib.binarize)(binarize_keys, batch)
    beta = beta_fn(state.step)

    def loss_fn(params):
      terms = vmapped(params, batch, keys, beta)
      return objectives.reduce_loss(terms, beta, free_bits), terms

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)
    flags = nonfinite_flags(terms, grad_norm)

    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    updated = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
    # A non-finite step leaves the state untouched; the caller stops or counts it as skipped. A
    # select fuses into the update, where lax.cond copied the whole state on CPU (~2% of a step).
    skip = jnp.any(flags)
    new_state = jax.tree.map(lambda old, new: jnp.where(skip, old, new), state, updated)
    new_state = new_state.replace(step=state.step + 1,
                                  num_skipped=state.num_skipped + skip.astype(jnp.int32))
    metrics = {
        "loss": loss, "elbo": terms["elbo"].mean(), "bound": terms["bound"].mean(),
        "log_px_given_z": terms["log_px_given_z"].mean(), "kl": terms["kl"].mean(),
        "beta": beta, "grad_norm": grad_norm, "nonfinite": flags,
    }
    return new_state, metrics

  return train_step


def make_train_chunk(train_step, train_key, batch_size: int, fast: bool = True):
  """Returns chunk(state, data, perm, start, num_steps) running `num_steps` steps in one `lax.scan`.

  data: [N, *data_shape] on device; perm: [N] this epoch's order; start: the chunk's first batch
  within the epoch (state.step % steps_per_epoch); a chunk never crosses an epoch boundary.
  `fast=False` compiles with plain `jax.jit` (the reference run of scripts/bench.py).
  """
  def chunk(state, data, perm, start, num_steps):
    def body(state, i):
      idx = jax.lax.dynamic_slice_in_dim(perm, (start + i) * batch_size, batch_size)
      return train_step(state, data[idx], jax.random.fold_in(train_key, state.step))
    return jax.lax.scan(body, state, jnp.arange(num_steps))

  return xla.jit(chunk, fast=fast, static_argnums=(4,), donate_argnums=(0,))


def epoch_permutation(data_key, epoch: int, n: int):
  return jax.random.permutation(jax.random.fold_in(data_key, epoch), n)


def chunk_plan(step: int, steps_per_epoch: int, steps_per_call: int, total_steps: int):
  """(epoch, offset in epoch, number of steps) of the chunk starting at `step`."""
  epoch, offset = divmod(step, steps_per_epoch)
  return epoch, offset, min(steps_per_call, steps_per_epoch - offset, total_steps - step)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains the model `config` describes in `workdir` (resuming if it holds a run) and evaluates it.

  Returns the results dict that is also written to workdir/results.json.
  """
  from elbo_jax import run as run_lib  # workdir bookkeeping: checkpoints, metrics, provenance

  check_config(config)
  devices = select_devices(config.accelerator.platform)
  mesh = jax.sharding.Mesh(np.array(devices), ("data",))
  if config.training.batch_size % len(devices):
    raise ConfigError(f"training.batch_size={config.training.batch_size} must be divisible by the "
                      f"number of devices ({len(devices)})")
  dataset = data_lib.load(config.data)
  model = build_model(config, dataset)
  run = run_lib.Run(workdir, config)

  n = len(dataset.train)
  batch_size = config.training.batch_size
  steps_per_epoch = n // batch_size
  if steps_per_epoch < 1:
    raise ConfigError(f"training.batch_size={batch_size} exceeds the {n} training examples")
  total_steps = steps_per_epoch * config.training.num_epochs
  keys = split_seed(config.seed)
  optimizer = make_optimizer(config.optimizer, steps_per_epoch, total_steps)
  per_example = objectives.from_config(model, config.objective)
  beta_fn = objectives.beta_schedule(config.objective.beta,
                                     config.objective.warmup_epochs * steps_per_epoch)
  train_step = make_train_step(per_example, optimizer, beta_fn, config.objective.free_bits,
                               dataset.dynamic, mesh)
  chunk_fn = make_train_chunk(train_step, keys["train"], batch_size)
  perm_fn = xla.jit(epoch_permutation, static_argnums=(2,))

  state = create_train_state(model, optimizer, dataset.train[0], keys["init"])
  state = run.restore(state)
  train_data = jax.device_put(dataset.train, NamedSharding(mesh, PartitionSpec()))
  validation = run_lib.eval_data(dataset, dataset.validation, keys["eval"])
  validate = run_lib.make_validator(model, config, validation)

  step = int(state.step)
  progress = run_lib.progress_bar(total_steps, step, enabled=config.training.progress)
  last_checkpoint, perm_epoch = step, None
  while step < total_steps:
    epoch, offset, num_steps = chunk_plan(step, steps_per_epoch,
                                          config.training.steps_per_call, total_steps)
    if epoch != perm_epoch:
      perm, perm_epoch = perm_fn(keys["data"], epoch, n), epoch
    tic = time.perf_counter()
    new_state, metrics = chunk_fn(state, train_data, perm, offset, num_steps)
    metrics = jax.device_get(metrics)
    seconds = time.perf_counter() - tic
    bad = np.asarray(metrics.pop("nonfinite"))  # [num_steps, len(WATCHED_TERMS)]
    if bad.any() and config.training.on_nonfinite == "stop":
      first = int(np.argmax(bad.any(1)))
      names = [t for t, b in zip(WATCHED_TERMS, bad[first]) if b]
      run.close()
      raise NonFiniteError(
          f"non-finite {', '.join(names)} at step {step + first + 1}; training stopped, the last "
          f"good checkpoint (step {run.latest_step()}) is kept. Set training.on_nonfinite='skip' "
          "to skip such updates instead")
    state, step = new_state, step + num_steps
    summary = {f"train/{k}": float(np.mean(v)) for k, v in metrics.items()}
    summary["train/steps_per_sec"] = num_steps / seconds
    summary["train/skipped_steps"] = int(state.num_skipped)
    if step % steps_per_epoch == 0 or step == total_steps:
      summary |= validate(state.params)
    run.write_metrics(step, summary)
    progress.update(num_steps, summary)
    if step - last_checkpoint >= config.training.checkpoint_every or step == total_steps:
      run.save(state)
      last_checkpoint = step
  progress.close()
  run.close()
  return run_lib.evaluate_run(workdir, model, config, dataset, state.params,
                              progress=config.training.progress)


def evaluate_workdir(workdir: str, eval_overrides: dict | None = None) -> dict:
  """Re-evaluates the latest checkpoint of a run with the config saved in its workdir."""
  from elbo_jax import run as run_lib

  config = run_lib.load_config(workdir)
  with config.unlocked():
    config.eval.update(eval_overrides or {})
  check_config(config)
  dataset = data_lib.load(config.data)
  model = build_model(config, dataset)
  steps_per_epoch = max(1, len(dataset.train) // config.training.batch_size)
  optimizer = make_optimizer(config.optimizer, steps_per_epoch,
                             steps_per_epoch * config.training.num_epochs)
  state = jax.eval_shape(lambda: create_train_state(model, optimizer, dataset.train[0],
                                                    split_seed(config.seed)["init"]))
  params = run_lib.restore_params(workdir, state)
  return run_lib.evaluate_run(workdir, model, config, dataset, params,
                              progress=config.training.progress)
