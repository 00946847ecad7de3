"""Image data sets as in-memory numpy arrays: `load(config.data)` -> `Dataset` with three splits.

A source (`elbo_jax.data.sources`) yields raw splits, uint8 0..255 or float32 in [0, 1];
`preprocessing` turns each into what a likelihood reads and `split` picks train / validation /
test. MNIST is 60k x 784 values, so everything stays in host memory and the trainer batches it.

Fields of `config.data` (defaults in `default_config`; a field left out takes its default):
  name: "digits" (scikit-learn's bundled 8x8 digits, no network needed) or a TFDS data set:
    "mnist", "fashion_mnist", "binarized_mnist" (the fixed Larochelle & Murray binarisation),
    "cifar10", "omniglot" (28x28, ink = 1), "celeb_a" (64x64 centre crop), and with their factors
    kept beside the images "dsprites" (64x64 binary; shape, scale, orientation, pos_x, pos_y) and
    "shapes3d" (64x64 RGB; floor_hue, wall_hue, object_hue, scale, shape, orientation). With
    source "local" any name is accepted; it only labels the data in `Dataset.info` (the default
    "digits", which names the scikit-learn set, is replaced there by the file's name).
    "sprites": procedural dSprites-like images generated offline with their five factors
    (`elbo_jax.data.sprites`).
  source: "auto" ("local" when `path` is set, otherwise the name's own source), "tfds",
    "sklearn", "local" or "generated".
  path: for source "local": an mnist.pkl.gz-style pickle, a .npz file (keys train / test and
    optionally validation, or x_train / x_test / x_valid), a directory of MNIST IDX files, or a
    directory of Larochelle & Murray's binarized_mnist_{train,valid,test}.amat (the fixed
    binarisation, 50k / 10k / 10k rows of 784 space-separated 0/1 values; use preprocessing
    "static_binarization", which keeps binary data as it is, and split "standard").
  data_dir: TFDS data directory; '' means TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
  download: let TFDS download and prepare missing data (most TFDS data sets need TensorFlow to be
    prepared); off, missing data is an immediate error.
  download_timeout: seconds to wait for a TFDS download before giving up.
  preprocessing: "dynamic_binarization" (float32 grey levels in [0, 1]; the train step draws
    `binarize` each time an example is used), "static_binarization" (float32 {0, 1}, drawn ONCE as
    Bernoulli(x) from `seed`), "float" (float32 in [0, 1]) or "uint8" (uint8 0..255, for 8-bit
    likelihoods; float sources are scaled by 255 and rounded).
  split: "burda" (train and validation pooled, `validation_size` images held out at random, the
    test split kept: 59,600 / 400 / 10,000 on MNIST) or "standard" (the data set's own splits,
    e.g. 50k / 10k / 10k for mnist.pkl.gz; a source without a validation split, such as TFDS
    MNIST, gets `validation_size` held-out training images as for "burda").
  validation_size: images held out of the training pool as validation (see `split`).
  test_size: for a source with no test split (dsprites, shapes3d): this many random training
    images (drawn with `seed`) become the test split.
  seed: picks the held-out images and the static binarisation (two independent streams), and
    the factor combinations of generated data.
  resolution, num_examples: generated data ("sprites") only: the image side in pixels and the
    number of distinct factor combinations drawn, split 80 / 10 / 10.

TFDS is read through its random-access data sources (`tfds.data_source`, array_record files)
instead of `tfds.load`: reading then needs no TensorFlow, a much lighter install.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from elbo_jax import xla
from elbo_jax.data.sources import AMAT_FORMAT, DATASETS, LOCAL_HINT, read_local
from elbo_jax.registry import (
  ConfigError,
  Registry,
  non_negative_int,
  one_of,
  positive,
  positive_int,
)

__all__ = [
    "DATASETS",
    "PREPROCESSING",
    "SPLITS",
    "Dataset",
    "binarize",
    "check_compatible",
    "default_config",
    "holdout_split",
    "load",
]

SOURCES = ("auto", "tfds", "sklearn", "local", "generated")
DATA_KINDS = ("unit_interval", "real", "uint8")
FIXED_BINARIZATION = "fixed: Larochelle & Murray's binarised MNIST"


def default_config() -> ml_collections.ConfigDict:
  """The `data` section of an experiment config with every field `load` reads."""
  return ml_collections.ConfigDict(
      {
          "name": "digits",
          "source": "auto",
          "path": "",
          "data_dir": "",
          "download": False,
          "download_timeout": 600,
          "preprocessing": "dynamic_binarization",
          "split": "standard",
          "validation_size": 400,
          "test_size": 10000,
          "seed": 0,
          # Generated data (data.name='sprites'): the image side and the number of examples drawn
          # (split 80 / 10 / 10 into train, validation, test).
          "resolution": 32,
          "num_examples": 20000,
      }
  )


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """Three in-memory splits of one image data set.

  Attributes:
    train, validation, test: [N, H, W, C]; float32 in [0, 1] ({0, 1} when statically binarised)
      or uint8 0..255 for preprocessing "uint8". `train` may hold only rows
      train_offset..train_offset+len(train)-1 of the num_train training examples
      (`restrict_train`: a process of a multi-process run keeps its own slice).
    preprocessing: the `data.preprocessing` that produced the arrays.
    info: JSON-ready provenance (name, source, path, preprocessing, binarization, split, seed,
      shape, dtype, sizes; data_dir and tfds_version for TFDS; factor_names and factor_sizes for
      data with known factors). The trainer writes it into results.json: static and dynamic
      MNIST numbers differ by ~2 nats.
    test_factors: [len(test), K] integer factors of the test images, for data with known factors
      (sprites, dsprites, shapes3d); None otherwise.
    render: for data that can show any factor combination (generated, or holding each one, as
      dsprites and shapes3d do), factors [n, K] -> images [n, H, W, C] as stored (what the
      intervention scores of `elbo_jax.disentanglement` observe); None otherwise.
  """

  train: np.ndarray
  validation: np.ndarray
  test: np.ndarray
  preprocessing: str
  info: dict[str, Any]
  train_offset: int = 0
  num_train: int = -1  # -1: len(train)
  test_factors: np.ndarray | None = None
  render: Callable[[np.ndarray], np.ndarray] | None = None

  def __post_init__(self):
    if self.num_train < 0:
      object.__setattr__(self, "num_train", len(self.train))

  @property
  def shape(self) -> tuple[int, ...]:
    """(H, W, C) of one example."""
    return self.train.shape[1:]

  def train_rows(self, start: int, stop: int) -> np.ndarray:
    """Rows start..stop-1 of the whole training set (they must be held): [stop - start, ...]."""
    if start < self.train_offset or stop > self.train_offset + len(self.train):
      raise ValueError(f"training rows {start}..{stop} are not among the rows held, "
                       f"{self.train_offset}..{self.train_offset + len(self.train)}")
    return self.train[start - self.train_offset:stop - self.train_offset]

  def restrict_train(self, start: int, stop: int) -> Dataset:
    """This data set holding only training rows start..stop-1 (a copy; the rest can be freed)."""
    return dataclasses.replace(self, train=self.train_rows(start, stop).copy(),
                               train_offset=start, num_train=self.num_train)

  @property
  def dynamic(self) -> bool:
    """Whether the train step must binarise each batch with `binarize`."""
    return self.preprocessing == "dynamic_binarization"


def binarize(key: jax.Array, x: jax.Array) -> jax.Array:
  """One Bernoulli(x) draw per value; x: [...] in [0, 1] -> [...] in {0, 1}, x's dtype."""
  return jax.random.bernoulli(xla.fast_key(key), x).astype(x.dtype)


# Preprocessing: raw split -> stored array. `rng` is used by static binarisation only.
PREPROCESSING: Registry[Callable[[np.ndarray, np.random.Generator], np.ndarray]] = Registry(
    "data.preprocessing"
)


def _to_unit(x: np.ndarray) -> np.ndarray:
  if x.dtype == np.uint8:
    return x.astype(np.float32) / np.float32(255)
  return x.astype(np.float32, copy=False)


def _to_uint8(x: np.ndarray) -> np.ndarray:
  if x.dtype == np.uint8:
    return x
  return np.rint(x * np.float32(255)).astype(np.uint8)


def _static_binarization(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  # Data that is already binary passes through unchanged (u < 0 never holds, u < 1 always does).
  return (rng.random(x.shape, dtype=np.float32) < _to_unit(x)).astype(np.float32)


PREPROCESSING.register("dynamic_binarization")(lambda x, rng: _to_unit(x))
PREPROCESSING.register("static_binarization")(_static_binarization)
PREPROCESSING.register("float")(lambda x, rng: _to_unit(x))
PREPROCESSING.register("uint8")(lambda x, rng: _to_uint8(x))


def _grey_level_scale(raw: dict[str, Any], preprocessing: str) -> str:
  """How stored values became the arrays trained on, for results.json."""
  if preprocessing == "uint8":
    return "pixel (uint8 0..255)"
  if all(x.dtype == np.uint8 for x in raw.values()):
    return "pixel/255"
  return "floats as stored"


def _held_out(n: int, size: int, seed: int, field: str = "data.validation_size",
              what: str = "training images", stream: int = 0) -> np.ndarray:
  """[n] bool: the `size` rows held out of n, drawn from `seed`'s `stream`; the same (n, size,
  seed, stream), the same rows. A ConfigError names `field` unless size < n."""
  if size >= n:
    raise ConfigError(f"{field}={size} must be smaller than the {n} {what}")
  held_out = np.zeros(n, bool)
  held_out[np.random.default_rng([seed, stream]).permutation(n)[:size]] = True
  return held_out


def holdout_split(
    x: np.ndarray, validation_size: int = 400, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Holds out `validation_size` random rows: x [N, ...] -> (train [N - V, ...], valid [V, ...]).

  The same (N, validation_size, seed) always picks the same rows; both parts keep x's order.
  """
  held_out = _held_out(len(x), validation_size, seed)
  return x[~held_out], x[held_out]


# A split's rows as (names [n], rows [n]): row rows[i] of the source split names[i], in order.
Rows = tuple[np.ndarray, np.ndarray]


def _rows(sizes: dict[str, int], names: list[str]) -> Rows:
  return (np.concatenate([np.full(sizes[k], k, object) for k in names]),
          np.concatenate([np.arange(sizes[k]) for k in names]))


def _holdout(pool: Rows, validation_size: int, seed: int) -> tuple[Rows, Rows]:
  held_out = _held_out(len(pool[0]), validation_size, seed)
  return (pool[0][~held_out], pool[1][~held_out]), (pool[0][held_out], pool[1][held_out])


# Splits: (source split sizes, validation_size, seed) -> (train, validation, test) as Rows, so
# that a process can read only the rows it trains on.
SPLITS: Registry[Callable[..., tuple[Rows, Rows, Rows]]] = Registry("data.split")


@SPLITS.register("burda")
def _burda_split(sizes: dict[str, int], validation_size: int, seed: int):
  pool = _rows(sizes, ["train", "validation"] if "validation" in sizes else ["train"])
  return (*_holdout(pool, validation_size, seed), _rows(sizes, ["test"]))


@SPLITS.register("standard")
def _standard_split(sizes: dict[str, int], validation_size: int, seed: int):
  if "validation" in sizes:
    return _rows(sizes, ["train"]), _rows(sizes, ["validation"]), _rows(sizes, ["test"])
  return (*_holdout(_rows(sizes, ["train"]), validation_size, seed), _rows(sizes, ["test"]))


def _gather(splits: dict[str, np.ndarray], rows: Rows) -> np.ndarray:
  """The rows of `rows` from the (preprocessed) source splits, in order: [len(rows), ...]."""
  names, index = rows
  first = next(iter(splits.values()))
  out = np.empty((len(names), *first.shape[1:]), first.dtype)
  for name in dict.fromkeys(names):
    mine = names == name
    out[mine] = splits[name][index[mine]]
  return out


def _fields(config_data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config_data over the defaults; unknown fields and wrong types are ConfigErrors."""
  values = default_config().to_dict()
  for field in config_data:
    if field not in values:
      raise ConfigError(f"data.{field} is not a data field; allowed: {', '.join(sorted(values))}")
  # Merged as plain dicts: ConfigDict would refuse e.g. a float timeout over the int default.
  cfg = ml_collections.ConfigDict({**values, **config_data.to_dict()})
  non_negative_int("data.seed", cfg.seed)
  positive("data.download_timeout", cfg.download_timeout, "seconds")
  positive_int("data.validation_size", cfg.validation_size)
  positive_int("data.test_size", cfg.test_size)
  one_of("data.source", cfg.source, SOURCES)
  return cfg


def _fixed_binarization(cfg: ml_collections.ConfigDict, source: str, extra: dict) -> str:
  """Which copy of Larochelle & Murray's fixed binarisation the data is, or ''."""
  if source == "tfds" and cfg.name == "binarized_mnist":
    return "TFDS binarized_mnist"
  return ".amat files" if extra.get("format") == AMAT_FORMAT else ""


def _refuse_dynamic(cfg: ml_collections.ConfigDict, fixed: str) -> None:
  if fixed and cfg.preprocessing == "dynamic_binarization":
    raise ConfigError(f"data.name={cfg.name!r} ({fixed}) is already binary (a fixed "
                      "binarisation); use data.preprocessing='static_binarization', or "
                      "data.name='mnist'")


def _binarization(cfg: ml_collections.ConfigDict, fixed: str) -> str:
  # One text for every copy of the fixed binarisation (info's source and path say which copy), so
  # an ablation's reference_setup can name the data its published numbers were measured on.
  if fixed:
    return FIXED_BINARIZATION
  if cfg.preprocessing == "dynamic_binarization":
    return "dynamic: Bernoulli(x) redrawn each time an example is used"
  if cfg.preprocessing == "static_binarization":
    return f"static: Bernoulli(x) drawn once with data.seed={cfg.seed}"
  return "none"


def _read(cfg) -> tuple[str, dict, dict]:
  """(source, {source split: images}, extra info) for data.source, "auto" resolved."""
  source = cfg.source
  if source == "auto":
    source = "local" if cfg.path else DATASETS.get(cfg.name).source
  if source == "local":
    raw, extra = read_local(cfg)
    _refuse_dynamic(cfg, _fixed_binarization(cfg, source, extra))
    return source, raw, extra
  builtin = DATASETS.get(cfg.name)
  if builtin.source != source:
    raise ConfigError(f"data.name={cfg.name!r} comes from data.source={builtin.source!r}, "
                      f"not {source!r}; use data.source='auto' or {LOCAL_HINT}")
  _refuse_dynamic(cfg, _fixed_binarization(cfg, source, {}))  # before a slow read
  return (source, *builtin.read(cfg))


def _hold_out_test(raw: dict, factors: dict | None, test_size: int, seed: int):
  """(raw, factors) with `test_size` random rows of the train split as the test split."""
  # Stream 2: the validation rows (stream 0) and the static binarisation (1) are drawn apart.
  held_out = _held_out(len(raw["train"]), test_size, seed, "data.test_size",
                       "images of the data set's only split", stream=2)
  parts = {"train": np.flatnonzero(~held_out), "test": np.flatnonzero(held_out)}
  take = lambda x, rows: x[rows] if isinstance(x, np.ndarray) else x.subset(rows)
  raw = raw | {k: take(raw["train"], rows) for k, rows in parts.items()}
  if factors is not None:
    factors = factors | {k: factors["train"][rows] for k, rows in parts.items()}
  return raw, factors


def _preprocess(raw: dict, rows: tuple, preprocess, seed: int) -> dict:
  """{source split: preprocessed images} for the rows that (train, validation, test) `rows`
  take; a split read on demand (TFDS) is decoded for those rows only."""
  processed = {}
  # One binarisation stream per source split, so an image's draw does not depend on `split`.
  for i, (k, x) in enumerate(sorted(raw.items())):
    rng = np.random.default_rng([seed, 1, i])
    if isinstance(x, np.ndarray):
      processed[k] = preprocess(x, rng)
      continue
    # The index stays that of the whole split (the static binarisation draws for the whole split
    # are cheap next to decoding).
    needed = np.unique(np.concatenate([r[1][r[0] == k] for r in rows]))
    full = np.zeros(x.shape, x.dtype)
    full[needed] = x.read(needed)
    processed[k] = preprocess(full, rng)
  return processed


def load(config_data: ml_collections.ConfigDict,
         train_slice: Callable[[int], tuple[int, int]] | None = None) -> Dataset:
  """Reads, preprocesses and splits the data set that `config_data` (config.data) describes.

  train_slice: num_train -> (start, stop): keep only those training rows (a process of a
  multi-process run); TFDS splits are then decoded for those rows only (plus the validation and
  test sets). Raises ConfigError (one line, naming the field to change) for unknown names or
  options, missing or unreadable data.
  """
  cfg = _fields(config_data)
  preprocess = PREPROCESSING.get(cfg.preprocessing)
  split = SPLITS.get(cfg.split)
  source, raw, extra = _read(cfg)
  factors = extra.pop("factors", None)  # {source split: [N, K]}, kept beside the images
  render = extra.pop("render", None)
  if "test" not in raw:
    raw, factors = _hold_out_test(raw, factors, cfg.test_size, cfg.seed)
  if len({x.shape[1:] for x in raw.values()}) > 1:
    shapes = ", ".join(f"{k} {x.shape[1:]}" for k, x in raw.items())
    raise ConfigError(f"data.path={cfg.path!r}: the splits' image shapes differ ({shapes})")
  train_rows, validation_rows, test_rows = split({k: len(x) for k, x in raw.items()},
                                                 cfg.validation_size, cfg.seed)
  num_train, offset = len(train_rows[0]), 0
  if train_slice is not None:
    offset, stop = train_slice(num_train)
    train_rows = (train_rows[0][offset:stop], train_rows[1][offset:stop])
  processed = _preprocess(raw, (train_rows, validation_rows, test_rows), preprocess, cfg.seed)
  train, validation, test = (_gather(processed, r)
                             for r in (train_rows, validation_rows, test_rows))
  # "digits" is the default name; on a local file it would mislabel e.g. MNIST in results.json.
  name = cfg.name
  if source == "local" and name == "digits":
    name = os.path.basename(os.path.normpath(cfg.path))
  info = dict(
      name=name,
      source=source,
      path=cfg.path if source == "local" else "",
      preprocessing=cfg.preprocessing,
      binarization=_binarization(cfg, _fixed_binarization(cfg, source, extra)),
      split=cfg.split,
      seed=cfg.seed,
      grey_levels=_grey_level_scale(raw, cfg.preprocessing),
      shape=list(train.shape[1:]),
      dtype=str(train.dtype),
      sizes={"train": num_train, "validation": len(validation), "test": len(test)},
      **extra,
  )
  return Dataset(train, validation, test, cfg.preprocessing, info, train_offset=offset,
                 num_train=num_train,
                 test_factors=None if factors is None else _gather(factors, test_rows),
                 # A fixed stream for static binarisation: generated images are binary already.
                 render=None if render is None else
                 lambda f: preprocess(render(f), np.random.default_rng(0)))


def check_compatible(dataset: Dataset, data_kind: str, likelihood: str = "") -> None:
  """Raises a one-line ConfigError if a likelihood cannot score `dataset`.

  Args:
    dataset: from `load`.
    data_kind: what the likelihood models: "unit_interval" (Bernoulli, continuous Bernoulli:
      values in [0, 1]), "real" (e.g. Gaussian: floats) or "uint8" (8-bit likelihoods: 0..255).
    likelihood: the configured likelihood.name, quoted in the message.
  """
  if data_kind not in DATA_KINDS:
    raise ValueError(f"data_kind={data_kind!r}; expected one of {', '.join(DATA_KINDS)}")
  who = f"likelihood.name={likelihood!r}" if likelihood else f"a likelihood of {data_kind} data"
  given = f"data.preprocessing={dataset.preprocessing!r}"
  is_uint8 = dataset.train.dtype == np.uint8
  if data_kind == "uint8" and not is_uint8:
    raise ConfigError(f"{who} needs 8-bit integer data; {given} gives floats; "
                      "use data.preprocessing='uint8'")
  if data_kind == "unit_interval" and is_uint8:
    raise ConfigError(f"{who} needs data in [0, 1]; {given} gives integers 0..255; use "
                      "data.preprocessing='float', 'dynamic_binarization' or 'static_binarization'")
  if data_kind == "real" and is_uint8:
    raise ConfigError(f"{who} needs real-valued data; {given} gives integers 0..255; "
                      "use data.preprocessing='float'")
