"""Training: `create_train_state`, `make_train_step`, `make_train_chunk`, and the host loop.

`train_group(configs, workdirs)` trains one run, or a group of replicas that differ only in seed and
scalar hyper-parameters (`build.vectorizable_fields`) as ONE jitted program: the train states are
stacked on a leading replica axis and the scanned chunk of steps is `jax.vmap`-ed over it.
`train_and_evaluate(config, workdir)` is a group of one.

With `training.early_stopping_patience` > 0 (`elbo_jax.early_stopping`) each replica keeps its own
best-validation parameters and patience; a replica whose patience runs out is checkpointed,
tested on its best parameters and trains no further (its lane of the program runs on, ignored),
and the group stops when every replica has stopped, so a replica's result is its standalone run's.

Randomness: each replica's seed is split once into init/data/train/eval keys. A step's key is
`fold_in(train_key, step)` and an epoch's data order comes from `fold_in(data_key, epoch)`
(`elbo_jax.batching`), so a run resumed from a checkpoint draws exactly what an uninterrupted run
draws, and a replica draws exactly what its standalone run draws. The keys and hyper-parameters
enter the program as arguments, never as constants, which is what lets replicas share it.

A step is a pure function of (state, batch, key, hyper-parameters) with the model, objective and
optimiser closed over; the config names the GLOBAL batch size, which the mesh's data axis splits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from elbo_jax import batching, initialization, objectives, report, xla
from elbo_jax import config as config_lib
from elbo_jax import data as data_lib
from elbo_jax import mesh as mesh_lib
from elbo_jax.build import Trainer, build_trainer, check_config
from elbo_jax.early_stopping import Tracker
from elbo_jax.metrics import METRICS_FILE, read_metrics
from elbo_jax.registry import ConfigError
from elbo_jax.workdir import (
  Run,
  WorkdirLock,
  check_config_matches,
  check_path,
  restore_best,
  restore_params,
)

# Terms checked for non-finite values, in the order they are reported.
WATCHED_TERMS = ("log_px_given_z", "kl", "log_weights", "loss", "gradients", "critic_loss")


class TrainingStopped(RuntimeError):
  """Training stopped on purpose; the message is one line and names the step and the cause."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class NonFiniteError(TrainingStopped):
  """A non-finite loss or gradient with training.on_nonfinite='stop'."""


class DivergenceError(TrainingStopped):
  """The training bound or the gradient norm ran away (training.divergence_*factor)."""


@flax.struct.dataclass
class TrainState:
  """step: [], params, opt_state, num_skipped: [] int32, initial: {"bound", "grad_norm"} of the
  first applied step (NaN before it), the reference for the divergence checks; critic: the
  objective's critic's {"params", "opt_state"} (`objectives.Critic`), None without one."""

  step: jax.Array
  params: Any
  opt_state: Any
  num_skipped: jax.Array
  initial: dict
  critic: Any = None


def split_seed(seed: int) -> dict:
  """The run's independent streams of randomness, all derived from one seed."""
  names = ("init", "data", "train", "eval", "sample")
  return dict(zip(names, jax.random.split(jax.random.key(seed), len(names))))


def create_train_state(model, optimizer, example, key, init: str = "default",
                       output_bias=None, critic=None) -> TrainState:
  """Initialises parameters from one example x: [*data_shape] and the optimiser state.

  init: `model.init`, the weights' scheme (`elbo_jax.initialization`); output_bias: None (Flax's
  zeros) or the decoder's output bias, [*data_shape] logits (`initialization.output_logits`);
  critic: the objective's `objectives.Critic` (`Trainer.critic`), initialised from its own stream.
  """
  init_key, sample_key = jax.random.split(key)
  params = model.init(init_key, jnp.asarray(example, jnp.float32), sample_key)
  # A stream of its own: the default scheme's parameters stay those of model.init for this key.
  params = initialization.initialize(params, jax.random.fold_in(init_key, 1), init)
  if output_bias is not None:
    params = initialization.set_output_bias(model, params, output_bias)
  critic_state = None
  if critic is not None:
    critic_params = critic.init(jax.random.fold_in(init_key, 2))
    critic_state = {"params": critic_params, "opt_state": critic.optimizer.init(critic_params)}
  nan = jnp.full((), jnp.nan, jnp.float32)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), num_skipped=jnp.zeros((), jnp.int32),
                    initial={"bound": nan, "grad_norm": nan}, critic=critic_state)


def hyperparameters(config, trainer: Trainer) -> dict:
  """A replica's traced inputs: its keys and the scalar hyper-parameters replicas may differ in,
  the objective's traced options (`objectives.register`) under "objective"."""
  keys = split_seed(config.seed)
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  return {"train_key": keys["train"], "data_key": keys["data"],
          "beta": f32(config.objective.beta), "free_bits": f32(config.objective.free_bits),
          "warmup_steps": f32(config.objective.warmup_epochs * trainer.steps_per_epoch),
          "learning_rate": f32(config.optimizer.learning_rate),
          "weight_decay": f32(config.optimizer.weight_decay),
          "objective": {name: f32(config.objective[name])
                        for name in objectives.traced_options(config.objective.name)}}


def nonfinite_flags(terms: dict, grad_norm, critic_loss=None) -> jax.Array:
  """[len(WATCHED_TERMS)] booleans: which watched quantities hold a NaN or an infinity.

  The gradients are judged by their global norm, which is non-finite iff some entry is.
  """
  present = dict(terms, gradients=grad_norm)
  if critic_loss is not None:
    present["critic_loss"] = critic_loss
  return jnp.stack([~jnp.all(jnp.isfinite(present[name])) if name in present
                    else jnp.asarray(False) for name in WATCHED_TERMS])


def make_train_step(trainer: Trainer, mesh):
  """Returns train_step(state, batch, key, hp) -> (state, metrics); one SGD step on a batch.

  batch: [B, *data_shape]; hp: `hyperparameters` of one replica.
  """
  batch_sharding = mesh_lib.sharding(mesh, "data")
  # The objective's traced options are keyword arguments, which vmap would map: one per replica.
  vmapped = jax.vmap(lambda params, x, key, beta, options: trainer.per_example(
      params, x, key, beta, **options), in_axes=(None, 0, 0, None, None))
  penalty = getattr(trainer.per_example, "batch_loss", None)  # on the whole batch, if any
  critic = trainer.critic

  def train_step(state, batch, key, hp):
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    # Per-example keys, so every draw is local to the device holding the example (see xla.py).
    binarize_keys, keys = jax.random.split(key, (2, batch.shape[0]))
    if trainer.dynamic_binarization:
      # Burda et al.: a fresh binarisation every time an example is used.
      batch = jax.vmap(data_lib.binarize)(binarize_keys, batch)
    beta = objectives.kl_weight(state.step, hp["beta"], hp["warmup_steps"])
    free_bits = hp["free_bits"] if trainer.free_bits else 0.0

    options = hp["objective"]
    if getattr(trainer.per_example, "takes_epoch", False):
      options = options | {"epoch": state.step / trainer.steps_per_epoch}

    critic_kwargs = {} if critic is None else {"critic_params": state.critic["params"]}

    def loss_fn(params):
      terms = vmapped(params, batch, keys, beta, options)
      batch_loss = None if penalty is None else functools.partial(
          penalty, dataset_size=trainer.num_train, **critic_kwargs, **hp["objective"])
      return objectives.reduce_loss(terms, beta, free_bits, batch_loss), terms

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)

    optimizer = trainer.optimizer(hp["learning_rate"], hp["weight_decay"])
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    updated = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
    critic_loss = None
    if critic is not None:
      updated, critic_loss = _critic_step(critic, updated, state.critic, terms,
                                          jax.random.fold_in(key, 1))
    flags = nonfinite_flags(terms, grad_norm, critic_loss)
    # A non-finite step leaves the state untouched; the caller stops or counts it as skipped. A
    # select fuses into the update, where lax.cond copied the whole state on CPU (~2% of a step).
    skip = jnp.any(flags)
    new_state = jax.tree.map(lambda old, new: jnp.where(skip, old, new), state, updated)
    bound = terms["bound"].mean()
    first = jnp.isnan(state.initial["bound"]) & ~skip
    initial = {"bound": jnp.where(first, bound, state.initial["bound"]),
               "grad_norm": jnp.where(first, grad_norm, state.initial["grad_norm"])}
    new_state = new_state.replace(step=state.step + 1, initial=initial,
                                  num_skipped=state.num_skipped + skip.astype(jnp.int32))
    return new_state, _step_metrics(loss, terms, bound, beta, grad_norm, flags, critic_loss)

  return train_step


def _step_metrics(loss, terms, bound, beta, grad_norm, flags, critic_loss) -> dict:
  """A step's scalars (batch means), its non-finite flags and, with a critic, the critic's loss."""
  metrics = {
      "loss": loss, "elbo": terms["elbo"].mean(), "bound": bound,
      "log_px_given_z": terms["log_px_given_z"].mean(), "kl": terms["kl"].mean(),
      "beta": beta, "grad_norm": grad_norm, "nonfinite": flags,
  }
  return metrics if critic_loss is None else metrics | {"critic_loss": critic_loss}


def _critic_step(critic, state: TrainState, critic_state: dict, terms: dict, key):
  """`state` with the critic one optimiser step further on the batch's `terms`, and its loss."""
  terms = jax.lax.stop_gradient(terms)
  loss, grads = jax.value_and_grad(critic.loss)(critic_state["params"], terms, key)
  updates, opt_state = critic.optimizer.update(grads, critic_state["opt_state"],
                                               critic_state["params"])
  params = optax.apply_updates(critic_state["params"], updates)
  return state.replace(critic={"params": params, "opt_state": opt_state}), loss


def make_train_chunk(trainer: Trainer, mesh, num_replicas: int, fast: bool = True):
  """Returns chunk(state, hp, blocks, order, start, num_steps) -> (state, metrics).

  Runs `num_steps` steps in one `lax.scan` for every replica at once. state, hp: stacked on a
  leading replica axis [R, ...]; blocks: [B, M, *data_shape] the training set
  (`batching.to_blocks`), shared; order: [R, B, steps_per_epoch] each replica's order for this
  epoch; start: the chunk's first batch within the epoch; a chunk never crosses an epoch boundary.
  metrics: [R, num_steps] per name. One replica compiles the unbatched program. `fast=False`
  compiles with plain `jax.jit` (the reference of scripts/bench.py).
  """
  train_step = make_train_step(trainer, mesh)

  def one_replica(state, hp, blocks, order, start, num_steps):
    def body(state, i):
      batch = batching.gather_batch(blocks, order, start + i)
      return train_step(state, batch, jax.random.fold_in(hp["train_key"], state.step), hp)
    return jax.lax.scan(body, state, jnp.arange(num_steps))

  def chunk(state, hp, blocks, order, start, num_steps):
    fn = functools.partial(one_replica, num_steps=num_steps)
    if num_replicas == 1:
      squeeze = lambda tree: jax.tree.map(lambda a: a[0], tree)
      out = fn(squeeze(state), squeeze(hp), blocks, order[0], start)
      return jax.tree.map(lambda a: a[None], out)
    # spmd_axis_name lays the replica axis on the mesh's replica axis (size 1 unless configured).
    return jax.vmap(fn, in_axes=(0, 0, None, 0, None), spmd_axis_name="replica")(
        state, hp, blocks, order, start)

  return xla.jit(chunk, fast=fast, static_argnums=(5,), donate_argnums=(0,))


def chunk_plan(step: int, steps_per_epoch: int, steps_per_call: int, total_steps: int):
  """(epoch, offset in epoch, number of steps) of the chunk starting at `step`."""
  epoch, offset = divmod(step, steps_per_epoch)
  return epoch, offset, min(steps_per_call, steps_per_epoch - offset, total_steps - step)


def plan_resume(checkpoint_steps: Sequence[Sequence[int]]) -> list[tuple[int | None, list[int]]]:
  """Which runs can resume together: [(step or None for a fresh start, [run indices]), ...].

  A group saves all its runs at the same steps, so a kill during one round of saves leaves some
  runs one checkpoint ahead of the others: those roll back to the step the others hold (none, if
  it was the first round) and the group goes on as it was, bitwise. Otherwise (e.g. a new seed
  beside half-trained ones) runs at different steps form separate groups, in order of appearance.
  """
  latest = [max(s) if s else None for s in checkpoint_steps]
  top = max((s for s in latest if s is not None), default=None)
  everyone = list(range(len(latest)))
  if top is None:
    return [(None, everyone)]
  leaders = [i for i, s in enumerate(latest) if s == top]
  previous = {max((s for s in checkpoint_steps[i] if s < top), default=None) for i in leaders}
  if len(previous) == 1:
    (before,) = previous
    if all(s in (top, before) for s in latest):
      return [(top if all(s == top for s in latest) else before, everyone)]
  groups: dict[Any, list[int]] = {}
  for i, s in enumerate(latest):
    groups.setdefault(s, []).append(i)
  return list(groups.items())


def failure(metrics: dict, initial: dict, config, first_step: int) -> TrainingStopped | None:
  """The error that stops a run, judged from one replica's chunk metrics, or None.

  metrics: name -> [num_steps] for one replica; initial: its state's `initial` (scalars);
  first_step: the step number of metrics[.][0].
  """
  bad = np.asarray(metrics["nonfinite"])  # [num_steps, len(WATCHED_TERMS)]
  if bad.any() and config.training.on_nonfinite == "stop":
    i = int(np.argmax(bad.any(1)))
    names = [t for t, b in zip(WATCHED_TERMS, bad[i]) if b]
    return NonFiniteError(f"non-finite {', '.join(names)} at step {first_step + i}",
                          first_step + i)
  factor = config.training.divergence_factor
  start = float(initial["bound"])
  if factor and math.isfinite(start):
    floor = start - factor * max(abs(start), 1.0)
    below = np.asarray(metrics["bound"]) < floor
    if below.any():
      i = int(np.argmax(below))
      return DivergenceError(
          f"training diverged at step {first_step + i}: the training bound "
          f"{float(metrics['bound'][i]):.4g} nats fell below {floor:.4g} (its first value "
          f"{start:.4g} minus training.divergence_factor={factor:g} times its magnitude)",
          first_step + i)
  factor = config.training.divergence_grad_factor
  start = float(initial["grad_norm"])
  if factor and math.isfinite(start):
    ceiling = factor * max(start, 1e-3)
    above = np.asarray(metrics["grad_norm"]) > ceiling
    if above.any():
      i = int(np.argmax(above))
      return DivergenceError(
          f"training diverged at step {first_step + i}: the gradient norm "
          f"{float(metrics['grad_norm'][i]):.4g} grew past {ceiling:.4g} "
          f"(training.divergence_grad_factor={factor:g} times its first value {start:.4g})",
          first_step + i)
  return None


def _advice(error: TrainingStopped) -> str:
  if isinstance(error, NonFiniteError):
    return "set training.on_nonfinite='skip' to skip such updates instead"
  return ("lower optimizer.learning_rate, or raise training.divergence_factor / "
          "training.divergence_grad_factor (0 turns a check off)")


@functools.cache
def _epoch_orders_fn():
  # Built on first use: xla.jit probes the backend, which must not happen at import time.
  return xla.jit(jax.vmap(batching.epoch_order, in_axes=(0, None, None, None)),
                 static_argnums=(3,))


def _epoch_orders(data_keys, epoch: int, sizes, steps: int):
  """Each replica's data order for an epoch: data_keys [R] -> [R, B, steps]."""
  return _epoch_orders_fn()(data_keys, epoch, sizes, steps)


def _process_rows(mesh, batch_size: int):
  """num_train -> the training rows [start, stop) of this process's blocks (all of them, alone)."""
  first, last = mesh_lib.process_range(mesh, batch_size)

  def rows(num_train: int) -> tuple[int, int]:
    bounds = batching.block_bounds(num_train, batch_size)
    return int(bounds[first]), int(bounds[last])

  return rows


def _group_mesh(configs: Sequence):
  """The mesh a group trains on; a ConfigError if its batch does not split over the devices."""
  config = configs[0]
  devices = mesh_lib.select_devices(config.accelerator.platform, config.accelerator.num_devices)
  # Replicas spread over the replica axis only when they divide evenly; else all devices hold
  # every replica and split its batch.
  parallelism = config.accelerator.replica_parallelism
  mesh = mesh_lib.make_mesh(devices, parallelism if len(configs) % parallelism == 0 else 1)
  batch_size = config.training.batch_size
  if batch_size % mesh_lib.data_size(mesh):
    raise ConfigError(f"training.batch_size={batch_size} must be divisible by the number of "
                      f"devices on the mesh's data axis ({mesh_lib.data_size(mesh)})")
  return mesh


def check_group(configs: Sequence, dataset) -> None:
  """Every check `train_group` makes before it writes anything (fields, devices, the model on
  the data), without training: a sweep runs it on each cell before its first run starts."""
  for c in configs:
    check_config(c)
  _group_mesh(configs)
  build_trainer(configs, dataset)


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _replica(tree, r: int):
  return jax.tree.map(lambda a: a[r], tree)


def _training_blocks(dataset, trainer: Trainer, mesh, batch_size: int):
  """The training set as [B, M, ...] blocks on the mesh's data axis, and the block sizes [B].

  Each process puts only the blocks of its own devices, one contiguous range of rows.
  """
  bounds = batching.block_bounds(dataset.num_train, batch_size)
  first, last = mesh_lib.process_range(mesh, batch_size)
  rows = dataset.train_rows(bounds[first], bounds[last])
  local, _ = batching.to_blocks(rows, bounds[first:last + 1] - bounds[first],
                                trainer.steps_per_epoch)
  blocks = jax.make_array_from_process_local_data(
      mesh_lib.sharding(mesh, "data"), local, (batch_size, *local.shape[1:]))
  return blocks, jax.device_put(np.diff(bounds).astype(np.int32), mesh_lib.sharding(mesh))


@dataclasses.dataclass
class Group:
  """Replicas ready to train as one program (`prepare_group`); `step` advances them all.

  state, hp: the replicas' TrainStates and `hyperparameters`, stacked on a leading replica axis
  laid on the mesh's replica axis; blocks [B, M, *data_shape], sizes [B]: the training set on the
  mesh's data axis (`batching.to_blocks`); chunk: the jitted `make_train_chunk`.
  """

  trainer: Trainer
  state: TrainState
  hp: dict
  blocks: jax.Array
  sizes: jax.Array
  chunk: Any

  def epoch_order(self, epoch: int):
    """Each replica's data order for `epoch`: [R, B, steps_per_epoch]."""
    return _epoch_orders(self.hp["data_key"], epoch, self.sizes, self.trainer.steps_per_epoch)

  def step(self, order, offset: int, num_steps: int) -> dict:
    """Runs `num_steps` steps from batch `offset` of the epoch of `order`; returns the metrics,
    [R, num_steps] per name (on the devices)."""
    self.state, metrics = self.chunk(self.state, self.hp, self.blocks, order, offset, num_steps)
    return metrics


def prepare_group(trainer: Trainer, mesh, dataset, configs: Sequence, start=None,
                  fast: bool = True) -> Group:
  """The replicated state, hyper-parameters, data blocks and program of a group of `configs`.

  Each replica starts from `create_train_state` with its seed's init key, or from what
  start(r, that state) returns (e.g. the state restored from a checkpoint). Every process
  computes the same values, which makes them arrays on the whole mesh. fast: see `xla.jit`.
  """
  replicated, by_replica = mesh_lib.sharding(mesh), mesh_lib.sharding(mesh, "replica")
  blocks, sizes = _training_blocks(dataset, trainer, mesh, configs[0].training.batch_size)
  output_bias = None
  if trainer.output_bias == "data_mean":
    # The mean of the whole training set, the same on every process (see block_mean).
    output_bias = jax.jit(lambda b, s: initialization.output_logits(batching.block_mean(b, s)),
                          out_shardings=replicated)(blocks, sizes)
  # Jitted: one compilation serves every replica (op by op, an MLP's init compiles ~40 times).
  init = jax.jit(functools.partial(create_train_state, trainer.model, trainer.optimizer(),
                                   init=trainer.init, critic=trainer.critic),
                 out_shardings=replicated)
  states = [init(dataset.train[0], split_seed(c.seed)["init"], output_bias=output_bias)
            for c in configs]
  if start is not None:
    states = [start(r, state) for r, state in enumerate(states)]
  state = jax.jit(lambda *states: _stack(states), out_shardings=by_replica)(*states)
  hp = jax.jit(lambda: _stack([hyperparameters(c, trainer) for c in configs]),
               out_shardings=by_replica)()
  return Group(trainer, state, hp, blocks, sizes,
               make_train_chunk(trainer, mesh, len(configs), fast=fast))


def train_group(configs: Sequence, workdirs: Sequence[str], *, raise_on_failure: bool = True,
                desc: str = "train", dataset=None, position: int = 0) -> list[dict | None]:
  """Trains runs that differ only in `build.vectorizable_fields` as one program, and evaluates them.

  Each run is an ordinary workdir (resumable, evaluable on its own). Returns each run's results
  (what workdir/results.json holds), or None for a run that stopped: with `raise_on_failure` the
  first stop raises its TrainingStopped error; without, the run stops alone (failed.json says why,
  its last good checkpoint is kept) and the others go on. dataset: `data.load(config.data)`, if
  the caller has it already; position: the progress bar's line (a sweep's own bar is above).
  """
  configs, workdirs = list(configs), list(workdirs)
  for c in configs:
    check_config(c)  # every field that needs no data, before devices and data are touched
  config = configs[0]
  mesh = _group_mesh(configs)
  batch_size = config.training.batch_size
  # A process reads (TFDS) or keeps (local files) only the training rows of its own blocks.
  rows = _process_rows(mesh, batch_size)
  if dataset is None:
    dataset = data_lib.load(config.data, train_slice=rows)
  elif (dataset.train_offset, dataset.train_offset + len(dataset.train)) != rows(dataset.num_train):
    dataset = dataset.restrict_train(*rows(dataset.num_train))
  trainer = build_trainer(configs, dataset)
  # Everything that can refuse the configs has run; only now is anything written.
  for workdir, c in zip(workdirs, configs):
    check_config_matches(check_path(workdir), c)
  with contextlib.ExitStack() as stack:
    runs = []
    for workdir, c in zip(workdirs, configs):
      runs.append(Run(workdir, c))
      stack.callback(runs[-1].close)
    loop = _Loop(trainer, mesh, dataset, configs, runs, raise_on_failure)
    bar = stack.enter_context(tqdm(
        total=trainer.total_steps, initial=loop.step, unit="step", desc=desc,
        dynamic_ncols=True, disable=not config.training.progress, mininterval=1.0,
        position=position, leave=position == 0))
    return loop.run(bar, desc)


def _tracker(config, workdir: str, steps_per_epoch: int, step) -> Tracker:
  """The run's early-stopping state at checkpoint `step` (None: a fresh start; math.inf: all that
  was logged), replayed from its metrics.jsonl."""
  tracker = Tracker.from_config(config)
  path = os.path.join(workdir, METRICS_FILE)
  if tracker.enabled and os.path.exists(path):
    tracker.replay(read_metrics(workdir), steps_per_epoch, step)
  return tracker


def resume_steps(configs, runs, steps_per_epoch: int) -> tuple[int | None, list, list[bool]]:
  """(the step the group resumes at, None for a fresh start; each run's own start; whether each
  run has already stopped early, so it resumes at its own last checkpoint and trains no further).
  """
  latest = [run.checkpoint_steps() for run in runs]
  stopped = [_tracker(c, run.workdir, steps_per_epoch, max(s, default=None)).stopped
             for c, run, s in zip(configs, runs, latest)]
  plan = plan_resume([s for s, done in zip(latest, stopped) if not done])
  if len(plan) > 1:
    raise ValueError(f"runs at different checkpoints cannot train as one group: {plan}")
  resume_at = plan[0][0]
  starts = [max(s) if done else resume_at for s, done in zip(latest, stopped)]
  return resume_at, starts, stopped


class _Loop:
  """The host side of training a group: which replicas are alive, their runs' files, validation,
  early stopping, checkpoints and the final evaluation. State, because a chunk's outcome decides
  what the next one does."""

  def __init__(self, trainer, mesh, dataset, configs, runs, raise_on_failure):
    self.trainer, self.mesh, self.dataset = trainer, mesh, dataset
    self.configs, self.runs, self.raise_on_failure = configs, runs, raise_on_failure
    spe = trainer.steps_per_epoch
    resume_at, self.starts, stopped = resume_steps(configs, runs, spe)
    self.group = prepare_group(trainer, mesh, dataset, configs,
                               start=lambda r, state: runs[r].start(state, self.starts[r]))
    self.trackers = [_tracker(c, run.workdir, spe, start)
                     for c, run, start in zip(configs, runs, self.starts)]
    test = report.eval_data(dataset, dataset.test, report.eval_key(configs[0], "test_data"))
    self.validators = [report.make_validator(c, dataset, report.eval_data(
        dataset, dataset.validation, split_seed(c.seed)["eval"]), test, mesh) for c in configs]
    self.step = int(resume_at or 0)
    self.alive = [not done for done in stopped]
    self.results: list[dict | None] = [None] * len(configs)
    self.to_evaluate = [True] * len(configs)  # every run but those that failed or were evaluated

  def run(self, bar, desc: str) -> list[dict | None]:
    """Trains chunk by chunk until every replica has finished or stopped; evaluates each."""
    config, spe, total = self.configs[0], self.trainer.steps_per_epoch, self.trainer.total_steps
    last_save_step, last_save_time, order_epoch = self.step, time.monotonic(), None
    while self.step < total and any(self.alive):
      epoch, offset, num_steps = chunk_plan(self.step, spe, config.training.steps_per_call, total)
      if epoch != order_epoch:
        order, order_epoch = self.group.epoch_order(epoch), epoch
      tic = time.perf_counter()
      metrics = self.group.step(order, offset, num_steps)
      metrics, initial, skipped = mesh_lib.to_host(
          (metrics, self.group.state.initial, self.group.state.num_skipped))
      seconds = time.perf_counter() - tic
      self._stop_failures(metrics, initial, desc)
      self.step += num_steps
      elbos = self._log(metrics, skipped, num_steps, seconds)
      bar.update(num_steps)
      if elbos:
        bar.set_postfix(elbo=f"{np.mean(elbos):.2f}" if len(elbos) == 1 else
                        f"{min(elbos):.1f}..{max(elbos):.1f}",
                        steps_per_s=f"{num_steps / seconds:.0f}", refresh=False)
      every_seconds = config.training.checkpoint_every_seconds
      # Saving is collective: every process must agree, so process 0's clock decides for all.
      overdue = mesh_lib.agree(bool(every_seconds)
                               and time.monotonic() - last_save_time >= every_seconds)
      if (self.step - last_save_step >= config.training.checkpoint_every or self.step == total
          or overdue):
        for r in np.flatnonzero(self.alive):
          self.runs[r].save(_replica(self.group.state, r))
        last_save_step, last_save_time = self.step, time.monotonic()
      self._stop_early()
    bar.close()
    for r in np.flatnonzero(self.to_evaluate):
      self.results[r] = self._evaluate(r, self.step if self.alive[r] else self.starts[r])
    return self.results

  def _stop_failures(self, metrics, initial, desc: str) -> None:
    """Stops each replica whose chunk held a non-finite value or a divergence (`failure`)."""
    for r in np.flatnonzero(self.alive):
      stop = failure(_replica(metrics, r), _replica(initial, r), self.configs[r], self.step + 1)
      if stop is None:
        continue
      self.alive[r] = False
      last = self.runs[r].latest_step()
      kept = ("no checkpoint had been written" if last is None else
              f"the last good checkpoint (step {last}) is kept")
      message = f"{stop}; training stopped, {kept}; {_advice(stop)}"
      self.runs[r].fail(message, stop.step)
      self.to_evaluate[r] = False
      if self.raise_on_failure:
        raise type(stop)(message, stop.step)
      tqdm.write(f"{desc}: {self.runs[r].workdir}: {message}")

  def _log(self, metrics, skipped, num_steps: int, seconds: float) -> list[float]:
    """Writes each live replica's chunk summary (and at an epoch's end its validation, which
    early stopping tracks); returns their training ELBOs."""
    spe = self.trainer.steps_per_epoch
    end_of_epoch = self.step % spe == 0 or self.step == self.trainer.total_steps
    elbos = []
    for r in np.flatnonzero(self.alive):
      m = _replica(metrics, r)
      summary = {f"train/{k}": float(np.mean(v)) for k, v in m.items() if k != "nonfinite"}
      summary["train/steps_per_sec"] = num_steps / seconds
      summary["train/skipped_steps"] = int(skipped[r])
      if end_of_epoch:
        summary |= self.validators[r](mesh_lib.to_host(_replica(self.group.state.params, r)))
      self.runs[r].write_metrics(self.step, summary)
      elbos.append(summary["train/elbo"])
      # After the metrics it is replayed from, before any checkpoint of this step (workdir.Run).
      if (end_of_epoch and self.trackers[r].enabled
          and self.trackers[r].update(self.step // spe, summary["eval/elbo"])):
        self.runs[r].save_best(self.step, _replica(self.group.state.params, r))
    return elbos

  def _stop_early(self) -> None:
    """Checkpoints, stops and evaluates each replica whose early-stopping patience ran out."""
    for r in np.flatnonzero(self.alive):
      if self.trackers[r].stopped:
        self.runs[r].save(_replica(self.group.state, r))  # so that a resumed group knows it
        self.alive[r] = False
        self.results[r] = self._evaluate(r, self.step)

  def _evaluate(self, r: int, at_step: int) -> dict:
    """Replica r's test evaluation: its latest parameters, or its best-validation ones."""
    params, tested = mesh_lib.to_host(_replica(self.group.state.params, r)), None
    tracker, spe = self.trackers[r], self.trainer.steps_per_epoch
    if tracker.enabled and tracker.best_epoch:
      params = mesh_lib.to_host(restore_best(self.runs[r].workdir, tracker.best_step(spe), params))
      tested = tracker.report(spe, at_step)
    self.to_evaluate[r] = False
    return report.evaluate_run(self.runs[r].workdir, self.configs[r], self.dataset, params,
                               tested=tested, progress=self.configs[0].training.progress,
                               mesh=self.mesh)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains the model `config` describes in `workdir` (resuming if it holds a run) and evaluates it.

  Returns the results dict that is also written to workdir/results.json. A non-finite value or a
  divergence raises NonFiniteError / DivergenceError, keeping the last good checkpoint.
  """
  return train_group([config], [workdir])[0]


def tested_parameters(workdir: str, config, steps_per_epoch: int) -> dict | None:
  """Which parameters a saved run tests: results.json's "tested_parameters" (the best-validation
  epoch, `early_stopping.Tracker.report`), or None for the latest ones (no early stopping)."""
  tracker = _tracker(config, workdir, steps_per_epoch, math.inf)
  if not (tracker.enabled and tracker.best_epoch):
    return None
  return tracker.report(steps_per_epoch, max(r["step"] for r in read_metrics(workdir)))


def restore_run(workdir: str, config, dataset) -> tuple[Trainer, Any]:
  """The trainer of a saved run and the parameters it tests (its latest, or with early stopping
  its best-validation ones), on this process's first device, whatever devices and processes wrote
  them."""
  trainer = build_trainer([config], dataset)
  state = jax.eval_shape(lambda: create_train_state(trainer.model, trainer.optimizer(),
                                                    dataset.train[0],
                                                    split_seed(config.seed)["init"],
                                                    critic=trainer.critic))
  tested = tested_parameters(workdir, config, trainer.steps_per_epoch)
  return trainer, restore_params(workdir, state, None if tested is None else tested["step"])


def evaluate_workdir(workdir: str, eval_overrides: dict | None = None) -> dict:
  """Re-evaluates the latest checkpoint of a run with the config saved in its workdir."""
  path = check_path(workdir)
  config = config_lib.load(path)
  with config.unlocked():
    config.eval.update(eval_overrides or {})
  lock = WorkdirLock(path, "evaluation") if mesh_lib.is_primary() else None
  try:
    # This machine's devices, whatever the run was trained on.
    mesh = mesh_lib.make_mesh(mesh_lib.select_devices(config.accelerator.platform))
    dataset = data_lib.load(config.data)
    trainer, params = restore_run(path, config, dataset)
    return report.evaluate_run(path, config, dataset, params,
                               tested=tested_parameters(path, config, trainer.steps_per_epoch),
                               progress=config.training.progress, mesh=mesh)
  finally:
    if lock is not None:
      lock.release()
