"""Readers that turn a data source into raw splits {"train", ["validation",] "test"}: [N, H, W, C].

Raw arrays are uint8 grey levels 0..255 or float32 in [0, 1] (TFDS splits are `TfdsSplit`s,
decoded for the rows asked for); `elbo_jax.data` preprocesses and splits them. Each reader
returns (raw splits, extra provenance for `Dataset.info`) and raises a one-line `ConfigError`
naming the config field to change. Nothing here writes files, except TFDS itself when
`data.download` is on (it prepares into a temporary directory and renames at the end).
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import pickle
import socket
import threading
import zipfile
import zlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import ml_collections
import numpy as np

from elbo_jax.data import sprites
from elbo_jax.registry import ConfigError, Registry, positive_int

Raw = dict[str, Any]  # split name -> np.ndarray, or a TfdsSplit decoded on demand
Reader = Callable[[ml_collections.ConfigDict], tuple[Raw, dict[str, Any]]]

LOCAL_HINT = ("data.source='local' with data.path=<an mnist.pkl.gz, a .npz file, an IDX "
              "directory or a directory of binarized_mnist_*.amat files>")


class Builtin(NamedTuple):
  """A data set known by name: its own source and its reader."""

  source: str
  read: Reader


DATASETS: Registry[Builtin] = Registry("data.name")


def _one_line(error: BaseException) -> str:
  return f"{type(error).__name__}: {' '.join(str(error).split())}"


# ----------------------------------------------------------------------------------------------
# scikit-learn digits: the offline default.


def _read_digits(cfg: ml_collections.ConfigDict) -> tuple[Raw, dict[str, Any]]:
  """scikit-learn's 1,797 8x8 digits (grey levels 0..16 -> [0, 1]), split 1,400 / 100 / 297.

  The split is fixed (permutation seed 0, not data.seed) so that test numbers stay comparable.
  """
  from sklearn.datasets import load_digits  # Slow import, needed by this source only.

  x = (load_digits().images / 16.0).astype(np.float32)[..., None]
  x = x[np.random.default_rng(0).permutation(len(x))]
  return {"train": x[:1400], "validation": x[1400:1500], "test": x[1500:]}, {}


DATASETS.register("digits")(Builtin("sklearn", _read_digits))


# ----------------------------------------------------------------------------------------------
# Procedural dSprites-like images with their factors (elbo_jax.data.sprites): offline, any size.


def _read_sprites(cfg: ml_collections.ConfigDict) -> tuple[Raw, dict[str, Any]]:
  """data.num_examples distinct factor combinations drawn with data.seed, rendered at
  data.resolution, split 80 / 10 / 10; the factors ride along as extra["factors"]."""
  positive_int("data.num_examples", cfg.num_examples)
  if not isinstance(cfg.resolution, int) or cfg.resolution < 8:
    raise ConfigError(f"data.resolution={cfg.resolution!r} must be an integer >= 8 (pixels)")
  total = math.prod(sprites.FACTOR_SIZES)
  if not 10 <= cfg.num_examples <= total:
    raise ConfigError(f"data.num_examples={cfg.num_examples} must lie in [10, {total}] (the "
                      "factor combinations of data.name='sprites')")
  images, factors, sizes = sprites.generate(cfg.num_examples, cfg.seed, cfg.resolution)
  n_train, n_test = int(0.8 * len(images)), len(images) // 10
  cuts = {"train": slice(0, n_train), "validation": slice(n_train, len(images) - n_test),
          "test": slice(len(images) - n_test, None)}
  extra = {"factors": {k: factors[c] for k, c in cuts.items()},
           "factor_names": list(sprites.FACTOR_NAMES), "factor_sizes": list(sizes),
           "resolution": cfg.resolution,
           "render": functools.partial(sprites.render, resolution=cfg.resolution)}
  return {k: images[c] for k, c in cuts.items()}, extra


DATASETS.register("sprites")(Builtin("generated", _read_sprites))


# ----------------------------------------------------------------------------------------------
# TFDS, through its random-access data sources (array_record files; reading needs no TensorFlow).


def _grey(img) -> np.ndarray:
  x = np.asarray(img)
  return x[..., None] if x.ndim == 2 else x


def _omniglot(img) -> np.ndarray:
  # 105x105 black-on-white strokes -> 28x28 area average, inverted so that ink is 1 as in the
  # Burda et al. 28x28 Omniglot. TFDS's train / test are the background / evaluation alphabets
  # (19,280 / 13,180), not Burda's 24,345 / 8,070 split.
  from PIL import Image

  return 255 - _grey(img.convert("L").resize((28, 28), Image.Resampling.BOX))


def _celeb_a(img) -> np.ndarray:
  # Centre 140x140 crop of the 178x218 aligned faces, area-resized to 64x64 (a common VAE setup).
  from PIL import Image

  return np.asarray(img.resize((64, 64), Image.Resampling.BOX, box=(19, 39, 159, 179)))


class TfdsSplit:
  """One TFDS split, decoded on demand: len(), shape [N, H, W, C], dtype, read(rows), labels.

  Records are parsed with protobuf and only the image decoded with PIL, skipping TFDS's
  per-feature Python decoding: 60k MNIST takes ~2.5 s instead of ~5 s on an idle 2-core machine.
  `subset(rows)` is a view of some of its rows (a test set held out of a lone train split).
  """

  def __init__(self, source, decode: Callable, binary: bool, index: np.ndarray | None = None):
    self._source, self._decode, self._binary = source, decode, binary
    self._index = np.arange(len(source)) if index is None else index
    self.dtype = np.dtype(np.float32 if binary else np.uint8)  # binarized_mnist stores {0, 1}
    self.shape = (len(self._index), *self._image(source[int(self._index[0])]).shape)

  def __len__(self) -> int:
    return self.shape[0]

  def subset(self, rows: np.ndarray) -> TfdsSplit:
    return TfdsSplit(self._source, self._decode, self._binary, self._index[rows])

  def _records(self, rows: np.ndarray, chunk: int = 4096):
    for start in range(0, len(rows), chunk):
      yield from self._source.__getitems__([int(r) for r in self._index[rows[start:start + chunk]]])

  @staticmethod
  def _example(record: bytes):
    from tensorflow_datasets.proto import tf_example_pb2

    return tf_example_pb2.Example.FromString(record)

  def _image(self, record: bytes) -> np.ndarray:
    from PIL import Image

    image = self._example(record).features.feature["image"].bytes_list.value[0]
    return self._decode(Image.open(io.BytesIO(image)))

  def read(self, rows: np.ndarray) -> np.ndarray:
    """The images at `rows` (indices into the split): [len(rows), H, W, C]."""
    out = np.empty((len(rows), *self.shape[1:]), self.dtype)
    for i, record in enumerate(self._records(np.asarray(rows))):
      out[i] = self._image(record)
    return out

  def labels(self, keys: Sequence[str]) -> np.ndarray:
    """The integer features `keys` of every row (ClassLabels, no image decoded): [N, len(keys)]."""
    out = np.empty((len(self), len(keys)), np.int64)
    for i, record in enumerate(self._records(np.arange(len(self)))):
      feature = self._example(record).features.feature
      out[i] = [feature[k].int64_list.value[0] for k in keys]
    return out


def factor_lookup(split, factors: np.ndarray, sizes: Sequence[int]) -> Callable | None:
  """factors [n, K] -> split's images of those factors [n, H, W, C], for a split that holds every
  combination of its factors [N, K] exactly once (dSprites, 3D Shapes); None for any other."""
  flat = np.ravel_multi_index(factors.T, sizes)
  if len(flat) != math.prod(sizes) or len(np.unique(flat)) != len(flat):
    return None
  row = np.empty(len(flat), np.int64)
  row[flat] = np.arange(len(flat))
  return lambda f: split.read(row[np.ravel_multi_index(np.asarray(f).T, sizes)])


def _call_with_timeout(fn: Callable[[], Any], seconds: float) -> Any:
  """Runs fn in a daemon thread; raises TimeoutError if it is still running after `seconds`.

  A thread cannot be killed: an abandoned one keeps running until the process exits. This is for
  network calls (DNS lookups, TFDS's downloader) whose own retries can last many minutes.
  """
  result: dict[str, Any] = {}

  def run():
    try:
      result["value"] = fn()
    except BaseException as e:  # noqa: BLE001 -- re-raised in the caller's thread.
      result["error"] = e

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(seconds)
  if thread.is_alive():
    raise TimeoutError(f"no answer within {seconds} s")
  if "error" in result:
    raise result["error"]
  return result.get("value")


def _download(builder, name: str, timeout: float) -> None:
  # A quick reachability probe first: offline, TFDS's downloader retries for many minutes.
  try:
    _call_with_timeout(
        lambda: socket.create_connection(("storage.googleapis.com", 443), timeout=5).close(), 10
    )
  except (OSError, TimeoutError) as e:
    raise ConfigError(
        f"data.download=True but the network is unreachable ({_one_line(e)}); "
        f"prepare data.name={name!r} elsewhere, or use {LOCAL_HINT}"
    ) from None
  try:
    _call_with_timeout(lambda: builder.download_and_prepare(file_format="array_record"), timeout)
  except Exception as e:  # noqa: BLE001 -- TFDS raises many types; all mean "not prepared".
    raise ConfigError(
        f"TFDS could not download and prepare data.name={name!r} within "
        f"data.download_timeout={timeout} ({_one_line(e)}; preparing most TFDS data sets needs "
        f"TensorFlow); use {LOCAL_HINT}"
    ) from None


def _read_tfds(
    name: str, cfg: ml_collections.ConfigDict, decode: Callable, binary: bool,
    factors: Sequence[tuple[str, str]] = (),
) -> tuple[Raw, dict[str, Any]]:
  import tensorflow_datasets as tfds  # Slow import, needed by this source only.

  builder = tfds.builder(name, data_dir=cfg.data_dir or None)
  if not builder.is_prepared():
    if not cfg.download:
      raise ConfigError(
          f"no prepared TFDS data for data.name={name!r} under {builder.data_dir} and "
          f"data.download=False; set data.data_dir to where it is prepared, data.download=True, "
          f"or use {LOCAL_HINT}"
      )
    _download(builder, name, cfg.download_timeout)
  raw = {}
  for split in ("train", "validation", "test"):
    if split not in builder.info.splits:
      continue
    try:
      source = builder.as_data_source(
          split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES
      )
    except NotImplementedError as e:  # Prepared as TFRecord, which needs TensorFlow to read.
      raise ConfigError(
          f"TFDS data for data.name={name!r} under {builder.data_dir} is not in array_record "
          f"format ({_one_line(e)}); re-prepare it with file_format='array_record' or use "
          f"{LOCAL_HINT}"
      ) from None
    raw[split] = TfdsSplit(source, decode, binary)
  extra = {"data_dir": os.fspath(builder.data_dir), "tfds_version": str(builder.version)}
  if factors:
    return raw, extra | _tfds_factors(builder, raw, factors)
  return raw, extra


def _tfds_factors(builder, raw: Raw, factors: Sequence[tuple[str, str]]) -> dict[str, Any]:
  """The factor labels of each split, their names and sizes, and the renderer of factor data."""
  import tensorflow_datasets as tfds

  keys = [key for _, key in factors]
  # The prepared files' own feature description, not the builder code's.
  features = tfds.builder_from_directory(builder.data_dir).info.features
  sizes = [features[key].num_classes for key in keys]
  labels = {split: x.labels(keys) for split, x in raw.items()}
  return {"factors": labels, "factor_names": [n for n, _ in factors], "factor_sizes": sizes,
          "render": factor_lookup(raw["train"], labels["train"], sizes)}


def _register_tfds(name: str, decode: Callable = _grey, binary: bool = False,
                   factors: Sequence[tuple[str, str]] = ()) -> None:
  """factors: (our name, the TFDS ClassLabel feature) of data with known factors, kept beside
  the images (`Dataset.test_factors`)."""
  def read(cfg: ml_collections.ConfigDict) -> tuple[Raw, dict[str, Any]]:
    return _read_tfds(name, cfg, decode, binary, factors)

  DATASETS.register(name)(Builtin("tfds", read))


_register_tfds("mnist")
_register_tfds("fashion_mnist")
_register_tfds("binarized_mnist", binary=True)  # The fixed Larochelle & Murray binarisation.
_register_tfds("cifar10")
_register_tfds("omniglot", _omniglot)
_register_tfds("celeb_a", _celeb_a)
# Data with known factors (Matthey et al. 2017; Burgess & Kim 2018), one train split each: every
# factor combination once (737,280 and 480,000 images at 64 x 64).
_register_tfds("dsprites", binary=True, factors=(
    ("shape", "label_shape"), ("scale", "label_scale"), ("orientation", "label_orientation"),
    ("pos_x", "label_x_position"), ("pos_y", "label_y_position")))
_register_tfds("shapes3d", factors=(
    ("floor_hue", "label_floor_hue"), ("wall_hue", "label_wall_hue"),
    ("object_hue", "label_object_hue"), ("scale", "label_scale"), ("shape", "label_shape"),
    ("orientation", "label_orientation")))


# ----------------------------------------------------------------------------------------------
# Local files.

LOCAL_FORMATS = (
    "an mnist.pkl.gz-style pickle ((x, y), (x, y), (x, y)), a .npz file with train/test arrays, "
    "a directory with train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz], or one with "
    "Larochelle & Murray's binarized_mnist_{train,valid,test}.amat"
)
AMAT_FILES = {"train": "binarized_mnist_train.amat", "validation": "binarized_mnist_valid.amat",
              "test": "binarized_mnist_test.amat"}
AMAT_FORMAT = "amat: Larochelle & Murray's fixed binarisation of MNIST"
# Everything a damaged or foreign file can raise while being read.
_READ_ERRORS = (
    OSError,
    EOFError,
    zlib.error,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
)


def as_images(x: Any, what: str) -> np.ndarray:
  """Checks and reshapes one split: [N, D] (D square), [N, H, W] or [N, H, W, C] -> [N, H, W, C].

  Accepts uint8 (0..255) or floats in [0, 1]; raises ValueError naming `what` otherwise.
  """
  x = np.asarray(x)
  if x.ndim == 2 and math.isqrt(x.shape[1]) ** 2 == x.shape[1]:
    side = math.isqrt(x.shape[1])
    x = x.reshape(len(x), side, side, 1)
  elif x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or len(x) == 0:
    raise ValueError(f"{what} has shape {x.shape}; expected [N, D] with D square, [N, H, W] or "
                     "[N, H, W, C]")
  if x.dtype == np.uint8:
    return x
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{what} has dtype {x.dtype}; expected uint8 or floats in [0, 1]")
  if x.min() < 0.0 or x.max() > 1.0:
    raise ValueError(f"{what} has values in [{x.min()}, {x.max()}]; floats must lie in [0, 1]: "
                     "store 8-bit images as uint8, or divide them by 255")
  return x.astype(np.float32, copy=False)


def _read_pickle(path: str) -> Raw:
  # pickle can run code: only load files you trust (this is the deeplearning.net format).
  with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
    splits = pickle.load(f, encoding="latin1")
  if not isinstance(splits, (tuple, list)) or len(splits) != 3:
    raise ValueError("expected a pickled ((x, y), (x, y), (x, y)) for train / validation / test")
  return {k: as_images(s[0], f"the {k} images") for k, s in zip(("train", "validation", "test"),
                                                                 splits)}


def _read_npz(path: str) -> Raw:
  """Reads image arrays named train, test and optionally validation.

  Keras-style names are accepted too: x_train, x_test, x_valid or x_validation.
  """
  with np.load(path, allow_pickle=False) as f:
    keys = set(f.files)
    raw = {}
    for split, names in (("train", ("train", "x_train")), ("test", ("test", "x_test")),
                         ("validation", ("validation", "x_valid", "x_validation"))):
      found = [n for n in names if n in keys]
      if found:
        raw[split] = as_images(f[found[0]], f"array {found[0]!r}")
      elif split != "validation":
        raise ValueError(f"no array named {' or '.join(names)} (found: {', '.join(sorted(keys))})")
  return raw


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file of unsigned bytes (the original MNIST format), gzipped or not."""
  with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
    data = f.read()
  # Header: two zero bytes, type code 0x08 (unsigned byte), number of dims, then big-endian dims.
  if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
    raise ValueError(f"{os.path.basename(path)} is not an IDX file of unsigned bytes")
  dims = np.frombuffer(data, ">i4", count=data[3], offset=4)
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * data[3])
  if body.size != np.prod(dims):
    raise ValueError(f"{os.path.basename(path)} holds {body.size} bytes after its header; its "
                     f"header promises {int(np.prod(dims))}")
  return body.reshape(dims)


def _read_idx_dir(path: str) -> Raw:
  raw = {}
  for split, stem in (("train", "train-images"), ("test", "t10k-images")):
    names = [f"{stem}{sep}idx3-ubyte{gz}" for sep in "-." for gz in ("", ".gz")]
    found = [n for n in names if os.path.isfile(os.path.join(path, n))]
    if not found:
      raise FileNotFoundError(f"no {' / '.join(names)} in the directory")
    raw[split] = as_images(read_idx(os.path.join(path, found[0])), found[0])
  return raw


def read_amat(path: str) -> np.ndarray:
  """One .amat file of Larochelle & Murray's binarised MNIST: a row of 0/1 values per image,
  separated by spaces -> float32 {0, 1} [N, D] (a binary image is not grey level 1/255)."""
  with open(path, "rb") as f:
    text = np.frombuffer(f.read(), np.uint8)
  blank = np.isin(text, np.frombuffer(b" \t\r\n", np.uint8))
  values = text[~blank]
  starts = ~blank & np.concatenate([[True], blank[:-1]])
  name = os.path.basename(path)
  if len(values) != starts.sum() or not np.isin(values, np.frombuffer(b"01", np.uint8)).all():
    raise ValueError(f"{name} holds values other than 0 and 1")
  # Values per line: every line segment ends with its newline, so none is empty for reduceat.
  bounds = np.concatenate([[0], np.flatnonzero(text == ord("\n")) + 1])
  per_line = np.add.reduceat(starts, bounds[bounds < len(text)], dtype=np.int64)
  per_line = per_line[per_line > 0]
  if len(per_line) == 0 or (per_line != per_line[0]).any():
    raise ValueError(f"{name}: its rows hold {sorted(set(per_line.tolist()))} values; expected "
                     "the same number on every row")
  return (values - ord("0")).astype(np.float32).reshape(len(per_line), per_line[0])


def _read_amat_dir(path: str) -> Raw:
  raw = {}
  for split, name in AMAT_FILES.items():
    if not os.path.isfile(os.path.join(path, name)):
      raise FileNotFoundError(f"no {name} in the directory")
    raw[split] = as_images(read_amat(os.path.join(path, name)), name)
  return raw


def _stored_over_256(x: np.ndarray) -> bool:
  """Whether float images hold pixel / 256 (deeplearning.net's mnist.pkl.gz): every x * 256 whole,
  none above 255 / 256, and not all zero."""
  if not np.issubdtype(x.dtype, np.floating) or x.max() >= 1.0 or x.max() <= 0.0:
    return False
  scaled = x * np.float32(256)
  return bool(np.array_equal(scaled, np.rint(scaled)))


def _grey_levels(raw: Raw) -> tuple[Raw, dict[str, Any]]:
  """Maps splits stored as pixel / 256 back to their uint8 pixels, which preprocessing reads as
  pixel / 255 like every other source (TFDS, IDX, Burda et al.'s code): taken as Bernoulli means
  unchanged, pixel / 256 turns a saturated pixel off once in 256 draws and adds ~1.3 nats of
  binarisation entropy per MNIST test image."""
  if not all(_stored_over_256(x) for x in raw.values()):
    return raw, {}
  return ({k: np.rint(x * np.float32(256)).astype(np.uint8) for k, x in raw.items()},
          {"stored_grey_levels": "pixel/256, read as pixel/255"})


def read_local(cfg: ml_collections.ConfigDict) -> tuple[Raw, dict[str, Any]]:
  """Reads data.path: a directory of IDX or .amat files, a .npz file, or a (gzipped) pickle.

  Float images stored as pixel / 256 (deeplearning.net's mnist.pkl.gz) come back as uint8 pixels.
  """
  path = cfg.path
  if not path:
    raise ConfigError(f"data.source='local' needs data.path: {LOCAL_FORMATS}")
  if not os.path.exists(path):
    raise ConfigError(f"data.path={path!r} does not exist; expected {LOCAL_FORMATS}")
  extra = {}
  if os.path.isdir(path) and any(os.path.exists(os.path.join(path, n))
                                 for n in AMAT_FILES.values()):
    read, what = _read_amat_dir, "a directory of binarized_mnist_{train,valid,test}.amat files"
    extra = {"format": AMAT_FORMAT}
  elif os.path.isdir(path):
    read, what = _read_idx_dir, "a directory of MNIST IDX files"
  elif path.endswith(".npz"):
    read, what = _read_npz, "a .npz file with train/test image arrays"
  elif path.endswith((".pkl", ".pkl.gz", ".pickle", ".pickle.gz")):
    read, what = _read_pickle, "an mnist.pkl.gz-style pickle of ((x, y), (x, y), (x, y))"
  else:
    raise ConfigError(f"data.path={path!r} has an unknown file type; expected {LOCAL_FORMATS}")
  try:
    raw, grey = _grey_levels(read(path))
    return raw, grey | extra
  except _READ_ERRORS as e:
    raise ConfigError(f"data.path={path!r} could not be read as {what} ({_one_line(e)})") from None
