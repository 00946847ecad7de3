r"""Training throughput of Burda et al.'s 1-layer MLP VAE, against a plain Flax training step.

  python -m scripts.bench --data_path=/work/shared/data/mnist.pkl.gz

Model: 784-200-200-50 tanh, Bernoulli, batch 100, dynamically binarised MNIST (synthetic grey
levels without --data_path). Two training paths are timed in one process, interleaved:
- elbo_jax: `train.make_train_chunk` as `train.train_group` runs it (blocks of the training set
  on the device, steps scanned in chunks of --steps);
- reference: what the Flax examples teach: a `flax.training.train_state.TrainState`, a `@jax.jit`
  `train_step(state, batch, key)` that binarises the batch and takes the mean of the same
  per-example `ej.elbo` loss, one Python call per step, batches sliced on the host from a
  permuted copy of the training set.
Both start from the same parameters with the same optimiser. Printed: examples/s of each, their
ratio, and the training GFLOP/s against a float32 GEMM measured in the same process.
"""

import time

import flax.training.train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from configs import mnist_vae
from elbo_jax import batching, train
from elbo_jax import data as data_lib
from elbo_jax import mesh as mesh_lib
from elbo_jax.build import build_trainer

_DATA_PATH = flags.DEFINE_string("data_path", "", "mnist.pkl.gz; '' = synthetic data.")
_STEPS = flags.DEFINE_integer("steps", 298, "Steps per timed chunk (configs/mnist_vae.py's "
                              "training.steps_per_call).")
_WARMUP = flags.DEFINE_integer("warmup_chunks", 3, "Untimed chunks: a fresh process runs its first "
                               "seconds at about half speed (page faults, thread start-up).")
_TIMED = flags.DEFINE_integer("timed_chunks", 5, "Timed chunks per path; the median is reported.")


def gemm_peak_gflops(n=2048, repeats=10) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  tic = time.perf_counter()
  for _ in range(repeats):
    f(a).block_until_ready()
  return 2 * n**3 * repeats / (time.perf_counter() - tic) / 1e9


def train_flops_per_example(sizes) -> float:
  """Forward + backward of an MLP VAE step: 3x the forward matmul flops (2 per multiply-add)."""
  return 3 * 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def load_data(config):
  if _DATA_PATH.value:
    with config.unlocked():
      config.data.path = _DATA_PATH.value
    return data_lib.load(config.data)
  rng = np.random.default_rng(0)
  images = rng.random((59_600 + 400 + 10_000, 28, 28, 1), dtype=np.float32)
  return data_lib.Dataset(train=images[:59_600], validation=images[59_600:60_000],
                          test=images[60_000:], preprocessing="dynamic_binarization",
                          info={"name": "synthetic"})


def library_path(config, trainer, dataset, params):
  """run(num_steps) -> seconds: elbo_jax's scanned chunk, set up as train.train_group sets it up."""
  mesh = mesh_lib.make_mesh(jax.devices())
  state = train.create_train_state(trainer.model, trainer.optimizer(), dataset.train[0],
                                   train.split_seed(config.seed)["init"])
  state = train._stack([state.replace(params=params)])
  hp = train._stack([train.hyperparameters(config, trainer)])
  blocks, sizes = train._training_blocks(dataset, trainer, mesh, config.training.batch_size)
  order = jax.vmap(batching.epoch_order, in_axes=(0, None, None, None))(
      hp["data_key"], 0, sizes, trainer.steps_per_epoch)
  chunk = train.make_train_chunk(trainer, mesh, 1)
  box = {"state": state}

  def run(num_steps):
    tic = time.perf_counter()
    box["state"], metrics = chunk(box["state"], hp, blocks, order, 0, num_steps)
    jax.block_until_ready((box["state"], metrics))
    return time.perf_counter() - tic

  return run


def reference_path(config, trainer, dataset, params):
  """run(num_steps) -> seconds: a Flax-examples training loop over the same model and loss."""
  per_example = jax.vmap(trainer.per_example, in_axes=(None, 0, 0))
  state = flax.training.train_state.TrainState.create(
      apply_fn=trainer.model.apply, params=params, tx=trainer.optimizer())

  @jax.jit
  def train_step(state, batch, key):
    binarize_key, sample_key = jax.random.split(jax.random.fold_in(key, state.step))
    batch = jax.random.bernoulli(binarize_key, batch).astype(jnp.float32)

    def loss_fn(params):
      keys = jax.random.split(sample_key, batch.shape[0])
      return per_example(params, batch, keys)["loss"].mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  batch_size = config.training.batch_size
  rng = np.random.default_rng(0)
  shuffled = dataset.train[rng.permutation(len(dataset.train))]
  key = jax.random.key(config.seed)
  box = {"state": state}

  def run(num_steps):
    tic = time.perf_counter()
    for i in range(num_steps):
      batch = shuffled[i * batch_size:(i + 1) * batch_size]
      box["state"], loss = train_step(box["state"], batch, key)
    jax.block_until_ready((box["state"], loss))
    return time.perf_counter() - tic

  return run


def main(argv):
  del argv
  config = mnist_vae.get_config()
  dataset = load_data(config)
  trainer = build_trainer([config], dataset)
  params = train.create_train_state(trainer.model, trainer.optimizer(), dataset.train[0],
                                    train.split_seed(config.seed)["init"]).params
  batch_size, steps = config.training.batch_size, _STEPS.value
  runs = {"elbo_jax": library_path(config, trainer, dataset, params),
          "reference": reference_path(config, trainer, dataset, params)}
  first = {name: run(steps) for name, run in runs.items()}
  for _ in range(_WARMUP.value - 1):
    for run in runs.values():
      run(steps)
  times = {name: [] for name in runs}
  for _ in range(_TIMED.value):
    for name, run in runs.items():  # interleaved, so drift in the machine's speed hits both alike
      times[name].append(run(steps))
  rate = {name: steps * batch_size / float(np.median(t)) for name, t in times.items()}
  peak = gemm_peak_gflops()
  flops = train_flops_per_example([784, 200, 200, 100, 200, 200, 784])

  print(f"devices: {jax.devices()}")
  for name, t in times.items():
    print(f"train ({name}): {rate[name]:,.0f} examples/s, median of {len(t)} runs of {steps} "
          f"steps (range {steps * batch_size / max(t):,.0f}-{steps * batch_size / min(t):,.0f}); "
          f"compile + first run {first[name]:.1f} s; {rate[name] * flops / 1e9:.1f} GFLOP/s")
  print(f"elbo_jax / reference: x{rate['elbo_jax'] / rate['reference']:.2f}")
  print(f"GEMM peak (2048^3 float32 matmul, this process): {peak:.1f} GFLOP/s; elbo_jax reaches "
        f"{rate['elbo_jax'] * flops / 1e9 / peak:.0%} of it")


if __name__ == "__main__":
  app.run(main)
