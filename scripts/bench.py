r"""Speed of Burda et al.'s 1-layer MLP VAE (784-200-200-50 tanh, Bernoulli) on this machine.

  python -m scripts.bench --data_path=/work/shared/data/mnist.pkl.gz            # training
  python -m scripts.bench --data_path=/work/shared/data/mnist.pkl.gz --eval     # evaluation
  python -m scripts.bench --data_path=/work/shared/data/mnist.pkl.gz --replicas=8  # seeds

Training (batch 100, dynamically binarised MNIST; synthetic grey levels without --data_path): two
training paths are timed in one process, interleaved, from the same parameters:
- elbo_jax: `train.make_train_chunk` as `train.train_group` runs it (the training set in blocks on
  the device, --steps steps per `lax.scan` chunk);
- reference: what the Flax examples teach: a `flax.training.train_state.TrainState`, a `@jax.jit`
  `train_step(state, batch, key)` that binarises the batch and takes the mean of the same
  per-example `ej.elbo` loss, one Python call per step, batches sliced on the host from a
  permuted copy of the training set.
Printed: examples/s of each, their ratio, and the GFLOP/s of the matmuls against a float32 GEMM
measured in the same process.

Evaluation (--eval): the K=5000 importance-sampled log-likelihood (`evaluation.log_likelihood`,
as `report.evaluate_run` runs it) of --eval_examples test images, for every eval.batch_size x
eval.chunk_size in --eval_batch_sizes x --eval_chunk_sizes, each with and without the importance
weights' Pareto k-hat and ESS (timed interleaved; their cost is printed), extrapolated to the
10,000 test images, with the decoder's GFLOP/s against the same GEMM peak. The parameters are
random unless --workdir names a trained run of configs/mnist_vae.py.

Replicas (--replicas R): R seeds trained as one vectorised program (`make_train_chunk` with R
replicas, as `experiments.ablate` trains cells that differ only in seed or scalar
hyper-parameters) against the same R runs one after another, in the same process, interleaved;
total examples/s of both and their ratio.

--compute_dtype sets accelerator.compute_dtype for training (evaluation is always float32).
--plain_jit also times elbo_jax's training chunk and evaluation compiled with plain `jax.jit`
(`fast=False`: without `xla.CPU_COMPILER_OPTIONS`). --draws times the random draws of a training
step (binarisation of a [100, 784] batch, [100, 50] posterior noise) three ways: JAX's default
threefry, its non-partitionable algorithm, and `xla.THREEFRY_UNROLLED` (`xla.fast_key`).
"""

import itertools
import time

import flax.training.train_state
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from configs import mnist_vae
from elbo_jax import data as data_lib
from elbo_jax import evaluation, report, train, xla
from elbo_jax import mesh as mesh_lib
from elbo_jax.build import build_trainer
from elbo_jax.workdir import restore_params

_DATA_PATH = flags.DEFINE_string("data_path", "", "mnist.pkl.gz; '' = synthetic data.")
_COMPUTE_DTYPE = flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                                   "accelerator.compute_dtype of the trained model.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "training.batch_size (the global batch; "
                                   "a multiple of the number of devices).")
_STEPS = flags.DEFINE_integer("steps", 298, "Steps per timed chunk (configs/mnist_vae.py's "
                              "training.steps_per_call).")
_WARMUP = flags.DEFINE_integer("warmup_chunks", 3, "Untimed chunks: a fresh process runs its first "
                               "seconds at about half speed (page faults, thread start-up).")
_TIMED = flags.DEFINE_integer("timed_chunks", 5, "Timed chunks per path; the median is reported.")
_EVAL = flags.DEFINE_bool("eval", False, "Time the test log-likelihood instead of training.")
_EVAL_EXAMPLES = flags.DEFINE_integer("eval_examples", 200, "Test images timed per shape.")
_EVAL_K = flags.DEFINE_integer("eval_k", 5000, "Importance samples per test image.")
_EVAL_BATCH_SIZES = flags.DEFINE_list("eval_batch_sizes", ["20"], "eval.batch_size values.")
_EVAL_CHUNK_SIZES = flags.DEFINE_list("eval_chunk_sizes", ["500"], "eval.chunk_size values.")
_EVAL_REPEATS = flags.DEFINE_integer("eval_repeats", 2, "Timed passes per shape; the fastest "
                                     "is reported.")
_WORKDIR = flags.DEFINE_string("workdir", "", "A trained run of configs/mnist_vae.py to evaluate.")
_PLAIN_JIT = flags.DEFINE_bool("plain_jit", False,
                                "Also time elbo_jax compiled with plain jax.jit.")
_REPLICAS = flags.DEFINE_integer("replicas", 0, "Time this many seeds trained as one vectorised "
                                 "program against the same runs one after another instead.")
_DRAWS = flags.DEFINE_bool("draws", False, "Time a training step's random draws instead.")

ENCODER = [784, 200, 200, 100]  # the last layer: the posterior's mean and log-scale heads
DECODER = [50, 200, 200, 784]


def gemm_peak_gflops(n=2048, repeats=10) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  tic = time.perf_counter()
  for _ in range(repeats):
    f(a).block_until_ready()
  return 2 * n**3 * repeats / (time.perf_counter() - tic) / 1e9


def matmul_flops(sizes) -> float:
  """Forward flops of an MLP's matmuls for one input (2 per multiply-add)."""
  return 2 * sum(a * b for a, b in itertools.pairwise(sizes))


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


def library_path(configs, trainer, dataset, params, fast=True):
  """run(num_steps) -> seconds: elbo_jax's scanned chunk for len(configs) replicas (one vectorised
  program when there are several), set up as train.train_group sets it up."""
  group = train.prepare_group(trainer, mesh_lib.make_mesh(jax.devices()), dataset, configs,
                              start=lambda r, state: state.replace(params=params), fast=fast)
  order = group.epoch_order(0)

  def run(num_steps):
    tic = time.perf_counter()
    metrics = group.step(order, 0, num_steps)
    jax.block_until_ready((group.state, metrics))
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


def time_interleaved(runs: dict, steps: int):
  """Compiles and warms every run, then times them in turn (drift in the machine's speed hits
  them alike). Returns (seconds of the first call, wall seconds per timed call, CPU seconds per
  timed call) per name."""
  first = {name: run(steps) for name, run in runs.items()}
  for _ in range(_WARMUP.value - 1):
    for run in runs.values():
      run(steps)
  times, cpu = {name: [] for name in runs}, {name: [] for name in runs}
  for _ in range(_TIMED.value):
    for name, run in runs.items():
      tic = time.process_time()
      times[name].append(run(steps))
      cpu[name].append(time.process_time() - tic)
  return first, times, cpu


def bench_training(config, trainer, dataset, params, peak):
  batch_size, steps = config.training.batch_size, _STEPS.value
  runs = {"elbo_jax": library_path([config], trainer, dataset, params),
          "reference": reference_path(config, trainer, dataset, params)}
  if _PLAIN_JIT.value:
    runs["elbo_jax, plain jax.jit"] = library_path([config], trainer, dataset, params, fast=False)
  first, times, cpu = time_interleaved(runs, steps)
  rate = {name: steps * batch_size / float(np.median(t)) for name, t in times.items()}
  # Forward and backward: about three times the forward matmuls.
  flops = 3 * (matmul_flops(ENCODER) + matmul_flops(DECODER))
  for name, t in times.items():
    print(f"train ({name}, {config.accelerator.compute_dtype}): {rate[name]:,.0f} examples/s, "
          f"median of {len(t)} runs of {steps} steps (range {steps * batch_size / max(t):,.0f}-"
          f"{steps * batch_size / min(t):,.0f}); compile + first run {first[name]:.1f} s; "
          f"matmuls at {rate[name] * flops / 1e9:.0f} GFLOP/s = "
          f"{rate[name] * flops / 1e9 / peak:.0%} of the GEMM peak; "
          f"{np.median(cpu[name]) / np.median(t):.2f} CPU-seconds per second")
  print(f"elbo_jax / reference: x{rate['elbo_jax'] / rate['reference']:.2f}")
  if _PLAIN_JIT.value:
    print(f"elbo_jax / elbo_jax with plain jax.jit: "
          f"x{rate['elbo_jax'] / rate['elbo_jax, plain jax.jit']:.2f}")


def bench_replicas(config, dataset, params, num_replicas):
  """R seeds of the model trained as one vectorised program (what experiments.ablate does with
  cells that differ only in seed or scalar hyper-parameters) against the same R runs one after
  another, each its own one-replica program; total examples/s of both."""
  batch_size, steps = config.training.batch_size, _STEPS.value
  configs = []
  for seed in range(num_replicas):
    c = config.copy_and_resolve_references()
    with c.unlocked():
      c.seed = seed
    configs.append(c)
  sequential = [library_path([c], build_trainer([c], dataset), dataset, params) for c in configs]
  runs = {"vectorised": library_path(configs, build_trainer(configs, dataset), dataset, params),
          "one after another": lambda n: sum(run(n) for run in sequential)}
  first, times, _ = time_interleaved(runs, steps)
  rate = {name: num_replicas * steps * batch_size / float(np.median(t))
          for name, t in times.items()}
  for name, t in times.items():
    print(f"{num_replicas} replicas, {name}: {rate[name]:,.0f} examples/s in all (median of "
          f"{len(t)} runs of {steps} steps each; compile + first run {first[name]:.1f} s)")
  print(f"vectorised / one after another: x{rate['vectorised'] / rate['one after another']:.2f}")


def bench_evaluation(config, trainer, dataset, params, peak):
  model = report.eval_model(config, dataset)
  test = report.eval_data(dataset, dataset.test, jax.random.key(config.eval.seed))
  test = test[:_EVAL_EXAMPLES.value]
  k = _EVAL_K.value
  # (batch_size, chunk_size, fast, diagnostics): each shape with and without the k-hat and ESS.
  shapes = [(int(b), int(c), True, d) for b in _EVAL_BATCH_SIZES.value
            for c in _EVAL_CHUNK_SIZES.value for d in (True, False)]
  if _PLAIN_JIT.value:
    shapes += [(b, c, False, d) for b, c, _, d in shapes]

  def run(batch_size, chunk_size, fast, diagnostics, data):
    tic = time.perf_counter()
    ll = evaluation.log_likelihood(model, params, data, jax.random.key(2), num_samples=k,
                                   chunk_size=chunk_size, batch_size=batch_size, fast=fast,
                                   diagnostics=diagnostics)
    return time.perf_counter() - tic, ll["mean"]

  first = {shape: run(*shape, test[:shape[0]])[0] for shape in shapes}  # compiles
  times, means = {shape: [] for shape in shapes}, {}
  for _ in range(_EVAL_REPEATS.value):
    for shape in shapes:
      seconds, means[shape] = run(*shape, test)
      times[shape].append(seconds)
  # Per example: K decoder passes; the encoder runs once.
  flops = k * matmul_flops(DECODER) + matmul_flops(ENCODER)
  for shape, t in times.items():
    per_10k = min(t) / len(test) * 10_000
    compiled = ("" if shape[2] else " (plain jax.jit)") + (
        ", k-hat and ESS" if shape[3] else ", no diagnostics")
    print(f"eval{compiled} K={k}, batch_size={shape[0]}, chunk_size={shape[1]}: "
          f"{len(test)} images in "
          f"{min(t):.1f} s (fastest of {len(t)}; compile + first batch {first[shape]:.1f} s) = "
          f"{per_10k:.0f} s per 10k images; decoder matmuls at "
          f"{len(test) * flops / min(t) / 1e9:.0f} GFLOP/s = "
          f"{len(test) * flops / min(t) / 1e9 / peak:.0%} of the GEMM peak; mean log-likelihood "
          f"{means[shape]:.2f} nats")
  for shape, t in times.items():
    if shape[3]:
      plain = min(times[(*shape[:3], False)])
      print(f"k-hat and ESS cost at batch_size={shape[0]}, chunk_size={shape[1]}: "
            f"{min(t) / plain - 1:+.1%} of the evaluation without them")


def bench_draws(repeats=7, steps=298):
  x = jax.random.uniform(jax.random.key(0), (100, 784))
  ways = {"JAX's default threefry": lambda k: k, "non-partitionable threefry": lambda k: k,
          "xla.THREEFRY_UNROLLED": xla.fast_key}

  def make(way, draw):
    def draws(key):
      def body(total, i):
        keys = jax.vmap(ways[way])(jax.random.split(jax.random.fold_in(key, i), 100))
        with jax.threefry_partitionable(way == "JAX's default threefry"):
          return total + jax.vmap(draw)(keys, x).sum(), None
      return jax.lax.scan(body, 0.0, jnp.arange(steps))[0]
    return xla.jit(draws)

  kinds = {"binarisation [100, 784]": lambda k, x: jax.random.bernoulli(k, x),
           "normal noise [100, 50]": lambda k, x: jax.random.normal(k, (50,))}
  fns = {(kind, way): make(way, draw) for kind, draw in kinds.items() for way in ways}
  times = {name: [] for name in fns}
  for f in fns.values():
    f(jax.random.key(1)).block_until_ready()
  for r in range(repeats):
    for name, f in fns.items():  # interleaved
      tic = time.perf_counter()
      f(jax.random.key(r)).block_until_ready()
      times[name].append((time.perf_counter() - tic) / steps * 1e6)
  for kind in kinds:
    unrolled = np.median(times[(kind, "xla.THREEFRY_UNROLLED")])
    for way in ways:
      t = np.median(times[(kind, way)])
      print(f"{kind}, {way}: {t:.0f} us per step (median of {repeats} scans of {steps} steps, "
            f"key splitting included); x{t / unrolled:.2f} the unrolled one's time")


def main(argv):
  del argv
  if _DRAWS.value:
    bench_draws()
    return
  config = mnist_vae.get_config()
  with config.unlocked():
    config.accelerator.compute_dtype = _COMPUTE_DTYPE.value
    config.training.batch_size = _BATCH_SIZE.value
  if _BATCH_SIZE.value % jax.device_count():
    raise app.UsageError(f"--batch_size={_BATCH_SIZE.value} must be a multiple of the "
                         f"{jax.device_count()} devices")
  dataset = load_data(config)
  trainer = build_trainer([config], dataset)
  state = train.create_train_state(trainer.model, trainer.optimizer(), dataset.train[0],
                                   train.split_seed(config.seed)["init"])
  params = restore_params(_WORKDIR.value, state) if _WORKDIR.value else state.params
  print(f"devices: {jax.devices()}; parameters: {_WORKDIR.value or 'random'}")
  peak = gemm_peak_gflops()
  if _REPLICAS.value:
    bench_replicas(config, dataset, params, _REPLICAS.value)
  elif _EVAL.value:
    bench_evaluation(config, trainer, dataset, params, peak)
  else:
    bench_training(config, trainer, dataset, params, peak)
  print(f"GEMM peak (2048^3 float32 matmul, this process, before the runs): {peak:.0f} GFLOP/s; "
        f"after them: {gemm_peak_gflops():.0f} GFLOP/s")


if __name__ == "__main__":
  app.run(main)
