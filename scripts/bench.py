r"""Training and evaluation throughput of the Burda et al. 1-layer MLP VAE (784-200-200-50 tanh,
Bernoulli), float32, on this machine.

  python scripts/bench.py                       # synthetic 28x28 data, 1000 eval examples
  python scripts/bench.py --data_path=../shared/data/mnist.pkl.gz --eval_examples=10000

Reports training examples/s (epoch chunks under lax.scan, as experiments.train runs them), the
fraction of this CPU's float32 GEMM peak that it reaches (the peak is measured in the same process
with a large matmul, the reference run), compile time, and the wall time of the K=5000
importance-sampled log-likelihood over --eval_examples test images.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from configs import mnist_vae
from elbo_jax import data as data_lib
from elbo_jax import evaluation, objectives, train
from elbo_jax.build import build_model
from elbo_jax.optim import make_optimizer

_DATA_PATH = flags.DEFINE_string("data_path", "", "mnist.pkl.gz; '' = synthetic data.")
_STEPS = flags.DEFINE_integer("steps", 298, "Steps per jitted chunk, as configs/mnist_vae.py.")
_WARMUP = flags.DEFINE_integer("warmup_chunks", 3, "Untimed chunks: a fresh process runs its first "
                               "seconds at about half speed (page faults, thread start-up).")
_TIMED = flags.DEFINE_integer("timed_chunks", 5, "Timed chunks; the median is reported.")
_EVAL_EXAMPLES = flags.DEFINE_integer("eval_examples", 1000, "Test images for the K=5000 timing.")
_EVAL_K = flags.DEFINE_integer("eval_k", 5000, "Importance samples per test image.")


def gemm_peak_gflops(n=2048, repeats=10) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  tic = time.perf_counter()
  for _ in range(repeats):
    f(a).block_until_ready()
  return 2 * n**3 * repeats / (time.perf_counter() - tic) / 1e9


def flops_per_example(sizes) -> float:
  """Forward + backward of an MLP VAE step: about 3x the forward matmul flops (2 per MAC)."""
  macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
  return 3 * 2 * macs


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


def main(argv):
  del argv
  config = mnist_vae.get_config()
  dataset = load_data(config)
  model = build_model(config, dataset)
  batch, steps = config.training.batch_size, _STEPS.value
  n = len(dataset.train)
  keys = train.split_seed(0)
  optimizer = make_optimizer(config.optimizer, n // batch, 10 * n // batch)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  step_fn = train.make_train_step(objectives.from_config(model, config.objective), optimizer,
                                  objectives.beta_schedule(1.0, 0), 0.0, True, mesh)
  chunk = train.make_train_chunk(step_fn, keys["train"], batch)
  state = train.create_train_state(model, optimizer, dataset.train[0], keys["init"])
  data = jax.device_put(dataset.train)
  perm = train.epoch_permutation(keys["data"], 0, n)

  tic = time.perf_counter()
  state, _ = chunk(state, data, perm, 0, steps)
  jax.block_until_ready(state)
  first = time.perf_counter() - tic
  for _ in range(_WARMUP.value - 1):
    state, _ = chunk(state, data, perm, 0, steps)
  jax.block_until_ready(state)
  times = []
  for _ in range(_TIMED.value):
    tic = time.perf_counter()
    state, _ = chunk(state, data, perm, 0, steps)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - tic)
  seconds = float(np.median(times))
  examples_per_s = steps * batch / seconds
  peak = gemm_peak_gflops()
  sizes = [784, 200, 200, 100, 200, 200, 784]  # encoder, mean+scale heads, decoder
  achieved = examples_per_s * flops_per_example(sizes) / 1e9

  eval_x = np.asarray(
      data_lib.binarize(jax.random.key(1), jnp.asarray(dataset.test[:_EVAL_EXAMPLES.value])))
  k = _EVAL_K.value
  tic = time.perf_counter()
  ll = evaluation.log_likelihood(model, state.params, eval_x, jax.random.key(2), num_samples=k,
                                 chunk_size=config.eval.chunk_size,
                                 batch_size=config.eval.batch_size)
  eval_seconds = time.perf_counter() - tic

  print(f"devices: {jax.devices()}")
  print(f"train: {examples_per_s:,.0f} examples/s, median of {len(times)} chunks after "
        f"{_WARMUP.value} warm-up chunks (batch {batch}, {steps} steps per lax.scan); "
        f"range {steps * batch / max(times):,.0f}-{steps * batch / min(times):,.0f}")
  print(f"compile + first chunk: {first:.1f} s; steady chunk: {seconds:.2f} s")
  print(f"GEMM peak (2048^3 float32 matmul, this process): {peak:.1f} GFLOP/s; "
        f"training reaches {achieved:.1f} GFLOP/s = {achieved / peak:.0%} of it "
        f"(peak-bound rate {peak * 1e9 / flops_per_example(sizes):,.0f} examples/s)")
  print(f"eval: K={k} log-likelihood of {len(eval_x)} images in {eval_seconds:.1f} s "
        f"({eval_seconds / len(eval_x) * 10_000 / 60:.1f} min per 10k images); "
        f"mean {ll['mean']:.2f} nats")


if __name__ == "__main__":
  app.run(main)
