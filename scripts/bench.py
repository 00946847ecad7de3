r"""Training and evaluation throughput of the Burda et al. 1-layer MLP VAE (784-200-200-50 tanh,
Bernoulli), float32, on this machine.

  python scripts/bench.py                       # synthetic 28x28 data, 1000 eval examples
  python scripts/bench.py --data_path=../shared/data/mnist.pkl.gz --eval_examples=10000

Reports training examples/s (epoch chunks under lax.scan, as experiments.train runs them), the
fraction of this CPU's float32 GEMM peak that it reaches (the peak is measured in the same process
with a large matmul), compile time, and the wall time of the K=5000 importance-sampled
log-likelihood over --eval_examples test images. With --reference (the default) the same training
chunk and evaluation are also compiled with plain `jax.jit` (`fast=False`, see elbo_jax/xla.py)
and timed in the same process, interleaved with the fast runs, and the speed-ups are printed.
"""

import contextlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from configs import mnist_vae
from elbo_jax import data as data_lib
from elbo_jax import evaluation, objectives, train, xla
from elbo_jax.build import build_model
from elbo_jax.optim import make_optimizer

_DATA_PATH = flags.DEFINE_string("data_path", "", "mnist.pkl.gz; '' = synthetic data.")
_STEPS = flags.DEFINE_integer("steps", 298, "Steps per jitted chunk, as configs/mnist_vae.py.")
_WARMUP = flags.DEFINE_integer("warmup_chunks", 3, "Untimed chunks: a fresh process runs its first "
                               "seconds at about half speed (page faults, thread start-up).")
_TIMED = flags.DEFINE_integer("timed_chunks", 5, "Timed chunks; the median is reported.")
_EVAL_EXAMPLES = flags.DEFINE_integer("eval_examples", 1000, "Test images for the K=5000 timing.")
_EVAL_K = flags.DEFINE_integer("eval_k", 5000, "Importance samples per test image.")
_REFERENCE = flags.DEFINE_bool("reference", True, "Also time plain jax.jit, for the ratios.")


def gemm_peak_gflops(n=2048, repeats=10) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  tic = time.perf_counter()
  for _ in range(repeats):
    f(a).block_until_ready()
  return 2 * n**3 * repeats / (time.perf_counter() - tic) / 1e9


def binarization_ms(fast: bool, steps=298, repeats=5) -> float:
  """Milliseconds per training step that dynamic binarisation of a [100, 784] batch takes under
  threefry's non-partitionable lowering (`fast`, what elbo_jax uses) or JAX's default."""
  x = jax.random.uniform(jax.random.key(0), (100, 784))

  def draws(key):
    def body(total, i):
      with xla.fast_random_bits() if fast else contextlib.nullcontext():
        bits = jax.random.bernoulli(jax.random.fold_in(key, i), x)
      return total + bits.sum(), None
    return jax.lax.scan(body, 0, jnp.arange(steps))[0]

  f = jax.jit(draws)
  f(jax.random.key(1)).block_until_ready()
  times = []
  for r in range(repeats):
    tic = time.perf_counter()
    f(jax.random.key(r)).block_until_ready()
    times.append(time.perf_counter() - tic)
  return float(np.median(times)) / steps * 1e3


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
  data = jax.device_put(dataset.train)
  perm = train.epoch_permutation(keys["data"], 0, n)
  variants = ("fast", "reference") if _REFERENCE.value else ("fast",)
  chunks, states, first, times = {}, {}, {}, {v: [] for v in variants}
  for v in variants:
    chunks[v] = train.make_train_chunk(step_fn, keys["train"], batch, fast=v == "fast")
    states[v] = train.create_train_state(model, optimizer, dataset.train[0], keys["init"])

  def run_chunk(v):
    tic = time.perf_counter()
    states[v], _ = chunks[v](states[v], data, perm, 0, steps)
    jax.block_until_ready(states[v])
    return time.perf_counter() - tic

  for v in variants:
    first[v] = run_chunk(v)
    for _ in range(_WARMUP.value - 1):
      run_chunk(v)
  for _ in range(_TIMED.value):
    for v in variants:  # interleaved, so drift in the machine's speed hits both alike
      times[v].append(run_chunk(v))
  rate = {v: steps * batch / float(np.median(times[v])) for v in variants}
  peak = gemm_peak_gflops()
  sizes = [784, 200, 200, 100, 200, 200, 784]  # encoder, mean+scale heads, decoder
  achieved = rate["fast"] * flops_per_example(sizes) / 1e9

  eval_x = np.asarray(
      data_lib.binarize(jax.random.key(1), jnp.asarray(dataset.test[:_EVAL_EXAMPLES.value])))
  k = _EVAL_K.value
  eval_seconds, ll = {}, {}
  for v in variants:
    tic = time.perf_counter()
    ll[v] = evaluation.log_likelihood(model, states["fast"].params, eval_x, jax.random.key(2),
                                      num_samples=k, chunk_size=config.eval.chunk_size,
                                      batch_size=config.eval.batch_size, fast=v == "fast")
    eval_seconds[v] = time.perf_counter() - tic

  print(f"devices: {jax.devices()}")
  for v in variants:
    print(f"train ({v}): {rate[v]:,.0f} examples/s, median of {len(times[v])} chunks after "
          f"{_WARMUP.value} warm-up chunks (batch {batch}, {steps} steps per lax.scan); range "
          f"{steps * batch / max(times[v]):,.0f}-{steps * batch / min(times[v]):,.0f}; "
          f"compile + first chunk {first[v]:.1f} s")
  print(f"GEMM peak (2048^3 float32 matmul, this process): {peak:.1f} GFLOP/s; "
        f"training reaches {achieved:.1f} GFLOP/s = {achieved / peak:.0%} of it "
        f"(peak-bound rate {peak * 1e9 / flops_per_example(sizes):,.0f} examples/s)")
  for v in variants:
    print(f"eval ({v}): K={k} log-likelihood of {len(eval_x)} images in {eval_seconds[v]:.1f} s "
          f"({eval_seconds[v] / len(eval_x) * 10_000 / 60:.2f} min per 10k images); "
          f"mean {ll[v]['mean']:.2f} nats")
  if _REFERENCE.value:
    print(f"speed-up of elbo_jax's compiler options over plain jax.jit: training "
          f"x{rate['fast'] / rate['reference']:.2f}, evaluation "
          f"x{eval_seconds['reference'] / eval_seconds['fast']:.2f}")
    fast_ms, default_ms = binarization_ms(True), binarization_ms(False)
    print(f"dynamic binarisation of a [100, 784] batch: {fast_ms:.3f} ms per step with "
          f"elbo_jax's random-bits lowering, {default_ms:.3f} ms with JAX's default "
          f"(x{default_ms / fast_ms:.2f})")


if __name__ == "__main__":
  app.run(main)
