"""Checks the data layer: sources, preprocessing, splits and errors, on small files in tmp_path."""

import gzip
import io
import pickle
import tempfile
import time

import jax
import numpy as np
import pytest

from elbo_jax import data
from elbo_jax.registry import ConfigError


@pytest.fixture(autouse=True)
def _tempdir_in_tmp_path(monkeypatch, tmp_path):
  # TFDS leaves an empty mkdtemp() directory behind for every builder of unprepared data.
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def _config(**fields):
  config = data.default_config()
  config.update(fields)
  return config


def _pixels(n, side=28, seed=0):
  """n random uint8 images [n, side, side]."""
  return np.random.default_rng(seed).integers(0, 256, (n, side, side), dtype=np.uint8)


def _write_pickle(path, sizes=(30, 10, 10)):
  """An mnist.pkl.gz-style file: float32 pixel / 256 rows [N, 784] and labels, per split."""
  splits = [_pixels(n, seed=i) for i, n in enumerate(sizes)]
  with gzip.open(path, "wb") as f:
    pickle.dump(tuple((x.reshape(len(x), -1) / np.float32(256), np.zeros(len(x))) for x in splits),
                f)
  return splits


def _idx_bytes(x):
  """The IDX encoding of a uint8 array: 0, 0, type 0x08, ndim, big-endian int32 dims, values."""
  return bytes([0, 0, 8, x.ndim]) + np.asarray(x.shape, ">i4").tobytes() + x.tobytes()


def _assert_one_line_error(match, **fields):
  with pytest.raises(ConfigError, match=match) as error:
    data.load(_config(**fields))
  assert "\n" not in str(error.value)
  return str(error.value)


def test_digits_default_loads_grey_levels_with_fixed_split():
  dataset = data.load(data.default_config())
  assert dataset.shape == (8, 8, 1)
  assert [len(dataset.train), len(dataset.validation), len(dataset.test)] == [1400, 100, 297]
  assert dataset.train.dtype == np.float32 and dataset.dynamic
  assert 0.0 <= dataset.train.min() and dataset.train.max() <= 1.0
  assert len(np.unique(dataset.train)) == 17  # grey levels 0..16, not binarised
  assert dataset.info["sizes"] == {"train": 1400, "validation": 100, "test": 297}
  assert dataset.info["name"] == "digits" and dataset.info["source"] == "sklearn"
  # The digits split is the data set's own: data.seed must not move test images around.
  np.testing.assert_array_equal(data.load(_config(seed=3)).test, dataset.test)


def test_static_binarization_is_binary_and_fixed_by_seed():
  grey = data.load(_config(preprocessing="float"))
  static = data.load(_config(preprocessing="static_binarization"))
  assert set(np.unique(static.train)) == {0.0, 1.0} and not static.dynamic
  np.testing.assert_array_equal(data.load(_config(preprocessing="static_binarization")).train,
                                static.train)
  assert not np.array_equal(
      data.load(_config(preprocessing="static_binarization", seed=1)).train, static.train
  )
  assert abs(static.train.mean() - grey.train.mean()) < 0.01
  assert "data.seed=0" in static.info["binarization"]


def test_binarize_draws_bernoulli_with_mean_x():
  x = data.load(data.default_config()).train  # [1400, 8, 8, 1] grey levels
  tiled = np.tile(x, (20, 1, 1, 1))
  samples = np.asarray(jax.jit(data.binarize)(jax.random.PRNGKey(0), tiled))
  assert samples.dtype == x.dtype and samples.shape == tiled.shape
  assert set(np.unique(samples)) <= {0.0, 1.0}
  for level in np.unique(x):  # 17 grey levels, each seen thousands of times
    assert abs(float(samples[tiled == level].mean()) - level) < 0.03


def test_uint8_from_digits_scales_by_255():
  dataset = data.load(_config(preprocessing="uint8"))
  grey = data.load(_config(preprocessing="float"))
  assert dataset.train.dtype == np.uint8
  np.testing.assert_array_equal(dataset.train, np.rint(grey.train * 255).astype(np.uint8))


def test_local_pickle_round_trip(tmp_path):
  path = tmp_path / "mnist.pkl.gz"
  train, validation, test = _write_pickle(path)
  dataset = data.load(_config(source="local", path=str(path), preprocessing="uint8"))
  # pixel / 256 is mapped back exactly, not by x * 255.
  np.testing.assert_array_equal(dataset.train[..., 0], train)
  np.testing.assert_array_equal(dataset.validation[..., 0], validation)
  np.testing.assert_array_equal(dataset.test[..., 0], test)
  floats = data.load(_config(path=str(path), preprocessing="float"))  # source "auto" -> local
  np.testing.assert_array_equal(floats.test[..., 0], test / np.float32(255))
  assert floats.info["source"] == "local" and floats.info["name"] == "mnist.pkl.gz"


def test_pickle_stored_as_pixel_over_256_loads_as_pixel_over_255(tmp_path):
  # deeplearning.net's mnist.pkl.gz stores pixel / 256 (max 255/256); used unchanged as Bernoulli
  # means a saturated pixel would be off once in 256 draws. Burda et al.'s code and TFDS use /255.
  path = tmp_path / "mnist.pkl.gz"
  train, _, test = _write_pickle(path)
  for preprocessing in ("dynamic_binarization", "float"):
    dataset = data.load(_config(path=str(path), preprocessing=preprocessing))
    np.testing.assert_array_equal(dataset.test[..., 0], test / np.float32(255))
    assert dataset.train.max() == 1.0 and train.max() == 255
    np.testing.assert_array_equal(dataset.train * 255, np.rint(dataset.train * 255))
    assert dataset.info["grey_levels"] == "pixel/255"
    assert dataset.info["stored_grey_levels"] == "pixel/256, read as pixel/255"
  # Floats that are not pixel / 256 are used as stored, and say so.
  np.savez(tmp_path / "grey.npz", train=np.full((4, 2, 2), 0.3, np.float32),
           test=np.full((2, 2, 2), 0.7, np.float32))
  grey = data.load(_config(path=str(tmp_path / "grey.npz"), preprocessing="float",
                           validation_size=1))
  np.testing.assert_allclose(grey.test, 0.7)
  assert grey.info["grey_levels"] == "floats as stored" and "stored_grey_levels" not in grey.info


def test_local_idx_round_trip(tmp_path):
  train, test = _pixels(20), _pixels(6, seed=1)
  with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
    f.write(_idx_bytes(train))
  (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(test))
  dataset = data.load(_config(source="local", path=str(tmp_path), name="mnist",
                              preprocessing="uint8", validation_size=5))
  assert dataset.shape == (28, 28, 1) and dataset.info["name"] == "mnist"
  assert [len(dataset.train), len(dataset.validation), len(dataset.test)] == [15, 5, 6]
  np.testing.assert_array_equal(dataset.test[..., 0], test)
  pool = np.concatenate([dataset.train, dataset.validation])[..., 0]
  assert sorted(map(bytes, pool)) == sorted(map(bytes, train))
  floats = data.load(_config(path=str(tmp_path), preprocessing="float", validation_size=5))
  np.testing.assert_allclose(floats.test[..., 0], test / 255.0, rtol=1e-6)


def test_local_npz_round_trip(tmp_path):
  train, validation, test = _pixels(12), _pixels(4, seed=1), _pixels(5, seed=2)
  np.savez(tmp_path / "own.npz", train=train, validation=validation, test=test)
  dataset = data.load(_config(path=str(tmp_path / "own.npz"), preprocessing="uint8"))
  np.testing.assert_array_equal(dataset.validation[..., 0], validation)
  # Keras-style keys, float [N, D] rows, no validation split: held out of train.
  np.savez(tmp_path / "keras.npz", x_train=train.reshape(12, -1) / np.float32(255),
           x_test=test.reshape(5, -1) / np.float32(255))
  keras = data.load(_config(path=str(tmp_path / "keras.npz"), preprocessing="uint8",
                            validation_size=2))
  assert [len(keras.train), len(keras.validation), len(keras.test)] == [10, 2, 5]
  np.testing.assert_array_equal(keras.test[..., 0], test)


def _write_amat(path, bits):
  """A Larochelle & Murray .amat file: one row of space-separated 0/1 values per image."""
  path.write_text("".join(" ".join(map(str, row)) + " \n" for row in bits.reshape(len(bits), -1)))


def test_local_amat_directory_is_the_fixed_binarisation_as_stored(tmp_path):
  bits = {s: (_pixels(n, seed=i) > 127).astype(np.uint8)
          for i, (s, n) in enumerate([("train", 7), ("valid", 3), ("test", 4)])}
  for split, x in bits.items():
    _write_amat(tmp_path / f"binarized_mnist_{split}.amat", x)
  dataset = data.load(_config(name="binarized_mnist", path=str(tmp_path),
                              preprocessing="static_binarization"))
  # The file's own splits, images in file order, values unchanged (0/1, not grey levels / 255).
  for split, x in (("train", bits["train"]), ("validation", bits["valid"]), ("test", bits["test"])):
    stored = getattr(dataset, split)
    assert stored.shape == (len(x), 28, 28, 1) and stored.dtype == np.float32
    np.testing.assert_array_equal(stored[..., 0], x)
  assert dataset.info["sizes"] == {"train": 7, "validation": 3, "test": 4}
  assert dataset.info["binarization"] == data.FIXED_BINARIZATION
  assert dataset.info["source"] == "local" and dataset.info["name"] == "binarized_mnist"
  _assert_one_line_error(r"already binary", name="binarized_mnist", path=str(tmp_path))


def test_damaged_amat_files_name_data_path(tmp_path):
  rows = (_pixels(2) > 127).astype(np.uint8)
  for split in ("train", "valid", "test"):
    _write_amat(tmp_path / f"binarized_mnist_{split}.amat", rows)
  test_file = tmp_path / "binarized_mnist_test.amat"
  test_file.write_text(test_file.read_text().replace("1", "2", 1))
  _assert_one_line_error(r"data\.path=.*binarized_mnist_test\.amat holds values other than 0 and 1",
                         path=str(tmp_path))
  test_file.write_text("0 1 1 0\n1 0 1\n")
  _assert_one_line_error(r"data\.path=.*rows hold \[3, 4\] values", path=str(tmp_path))
  test_file.unlink()
  _assert_one_line_error(r"data\.path=.*amat files.*no binarized_mnist_test\.amat",
                         path=str(tmp_path))


def test_holdout_split_sizes_and_determinism():
  train, validation = data.holdout_split(np.arange(60_000))
  assert (len(train), len(validation)) == (59_600, 400)
  assert np.array_equal(np.sort(np.concatenate([train, validation])), np.arange(60_000))
  small_train, small_validation = data.holdout_split(np.arange(50), validation_size=7, seed=3)
  assert (len(small_train), len(small_validation)) == (43, 7)
  np.testing.assert_array_equal(data.holdout_split(np.arange(50), 7, 3)[1], small_validation)
  assert not np.array_equal(data.holdout_split(np.arange(50), 7, 4)[1], small_validation)
  with pytest.raises(ConfigError, match="data.validation_size"):
    data.holdout_split(np.arange(5), validation_size=5)


def test_burda_split_pools_train_and_validation(tmp_path):
  path = tmp_path / "mnist.pkl.gz"
  train, validation, test = _write_pickle(path, sizes=(30, 10, 10))
  dataset = data.load(_config(path=str(path), split="burda", validation_size=4,
                              preprocessing="uint8"))
  assert dataset.info["sizes"] == {"train": 36, "validation": 4, "test": 10}
  pool = np.concatenate([dataset.train, dataset.validation])[..., 0]
  assert sorted(map(bytes, pool)) == sorted(map(bytes, np.concatenate([train, validation])))
  np.testing.assert_array_equal(dataset.test[..., 0], test)


def test_damaged_and_foreign_files_name_data_path(tmp_path):
  path = tmp_path / "mnist.pkl.gz"
  _write_pickle(path)
  content = path.read_bytes()
  path.write_bytes(content[: len(content) // 2])
  _assert_one_line_error(r"data\.path=.*mnist\.pkl\.gz.*could not be read", path=str(path))

  (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"x": 1}))
  _assert_one_line_error(r"data\.path=.*dict\.pkl", path=str(tmp_path / "dict.pkl"))

  (tmp_path / "notes.txt").write_text("hello")
  _assert_one_line_error(r"data\.path=.*unknown file type", path=str(tmp_path / "notes.txt"))

  np.savez(tmp_path / "wrong_keys.npz", images=_pixels(3))
  _assert_one_line_error(r"data\.path=.*found: images", path=str(tmp_path / "wrong_keys.npz"))

  np.savez(tmp_path / "out_of_range.npz", train=np.full((3, 4, 4), 2.0), test=np.zeros((3, 4, 4)))
  _assert_one_line_error(r"\[0, 1\]", path=str(tmp_path / "out_of_range.npz"))

  npz = (tmp_path / "wrong_keys.npz").read_bytes()
  (tmp_path / "cut.npz").write_bytes(npz[: len(npz) // 2])
  _assert_one_line_error(r"data\.path=.*cut\.npz", path=str(tmp_path / "cut.npz"))

  idx_dir = tmp_path / "idx"
  idx_dir.mkdir()
  (idx_dir / "train-images-idx3-ubyte").write_bytes(_idx_bytes(_pixels(4))[:-10])
  (idx_dir / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(_pixels(2)))
  _assert_one_line_error(r"data\.path=.*header promises", path=str(idx_dir))

  _assert_one_line_error(r"data\.path=.*does not exist", path=str(tmp_path / "missing.pkl.gz"))
  _assert_one_line_error(r"data\.source='local' needs data\.path", source="local")


@pytest.mark.parametrize(
    "field,value,allowed",
    [
        ("name", "mnits",
         "binarized_mnist, celeb_a, cifar10, digits, dsprites, fashion_mnist, mnist"),
        ("preprocessing", "binary", "dynamic_binarization, float, static_binarization, uint8"),
        ("split", "iwae", "burda, standard"),
        ("source", "web", "auto, tfds, sklearn, local"),
    ],
)
def test_unknown_options_list_the_allowed_values(field, value, allowed):
  message = _assert_one_line_error(f"data.{field}='{value}'", **{field: value})
  assert allowed in message


def test_config_mistakes_are_config_errors():
  with pytest.raises(ConfigError, match="data.nmae is not a data field"):
    data.load(_config(nmae="mnist"))
  _assert_one_line_error("data.name='mnist' comes from data.source='tfds'", name="mnist",
                         source="sklearn")
  _assert_one_line_error("already binary", name="binarized_mnist")


def test_missing_tfds_data_fails_fast_and_names_local_option(tmp_path):
  data_dir = tmp_path / "tfds"
  start = time.monotonic()
  message = _assert_one_line_error("no prepared TFDS data", name="mnist", data_dir=str(data_dir))
  assert time.monotonic() - start < 10
  assert "data.source='local'" in message and "data.download=True" in message
  assert not data_dir.exists()  # nothing half-written


def _prepare_fake_tfds(data_dir, class_name, version, splits, labels=None):
  """Writes a prepared array_record TFDS data set whose splits hold the given uint8 images.

  The images go in as PNG bytes, which TFDS stores without TensorFlow; the class name sets the
  data set's name (CelebA -> celeb_a), so the real builder of that name finds the files.
  labels: {feature: (num_classes, {split: [N] ints})}, ClassLabel features beside the images.
  """
  labels = labels or {}
  tfds = pytest.importorskip("tensorflow_datasets")
  from PIL import Image

  def png(x):
    buffer = io.BytesIO()
    Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).save(buffer, format="png")
    return buffer.getvalue()

  def info(self):
    features = {"image": tfds.features.Image(shape=next(iter(splits.values())).shape[1:])}
    features |= {k: tfds.features.ClassLabel(num_classes=n) for k, (n, _) in labels.items()}
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

  def generate(self, split):
    for i, x in enumerate(splits[split]):
      yield i, {"image": png(x)} | {k: int(v[split][i]) for k, (_, v) in labels.items()}

  with tfds.core.registered.skip_registration():
    builder = type(class_name, (tfds.core.GeneratorBasedBuilder,), {
        "VERSION": tfds.core.Version(version),
        "_info": info,
        "_split_generators": lambda self, dl: {s: self._generate_examples(s) for s in splits},
        "_generate_examples": generate,
    })
    builder(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def _multiset(x):
  """Images as a sorted list of bytes: TFDS shuffles records when it writes them."""
  return sorted(map(bytes, x))


def test_tfds_array_record_round_trip(tmp_path):
  train, test = _pixels(12)[..., None], _pixels(5, seed=1)[..., None]
  _prepare_fake_tfds(tmp_path, "Mnist", "3.0.1", {"train": train, "test": test})
  dataset = data.load(_config(name="mnist", data_dir=str(tmp_path), preprocessing="uint8",
                              split="burda", validation_size=3))
  assert dataset.info["sizes"] == {"train": 9, "validation": 3, "test": 5}
  assert dataset.info["source"] == "tfds" and dataset.info["tfds_version"] == "3.0.1"
  assert _multiset(np.concatenate([dataset.train, dataset.validation])) == _multiset(train)
  assert _multiset(dataset.test) == _multiset(test)


def test_tfds_binarized_mnist_is_kept_as_fixed_binarisation(tmp_path):
  bits = {s: (_pixels(n, seed=i) > 127).astype(np.uint8)[..., None]
          for i, (s, n) in enumerate([("train", 6), ("validation", 3), ("test", 4)])}
  _prepare_fake_tfds(tmp_path, "BinarizedMnist", "1.0.0", bits)
  dataset = data.load(_config(name="binarized_mnist", data_dir=str(tmp_path),
                              preprocessing="static_binarization"))
  assert dataset.info["binarization"].startswith("fixed")
  assert _multiset(dataset.validation) == _multiset(bits["validation"].astype(np.float32))


@pytest.mark.parametrize("class_name, name, channels, on", [("Dsprites", "dsprites", 1, 1),
                                                           ("Shapes3d", "shapes3d", 3, 255)])
def test_tfds_factor_data_keeps_its_factors_and_shows_any_combination(tmp_path, class_name, name,
                                                                       channels, on):
  from elbo_jax.data.sources import DATASETS
  # A small complete grid of factors (the real sets hold every combination once, too); each
  # image spells its factors' flat index in binary along its first row.
  keys = {"dsprites": ("label_shape", "label_scale", "label_orientation", "label_x_position",
                       "label_y_position"),
          "shapes3d": ("label_floor_hue", "label_wall_hue", "label_object_hue", "label_scale",
                       "label_shape", "label_orientation")}[name]
  sizes = (2, 3, 1, 2, 2, 1)[:len(keys)]
  grid = np.stack(np.unravel_index(np.arange(np.prod(sizes)), sizes), -1)
  order = np.random.default_rng(0).permutation(len(grid))  # stored in no particular order

  def spell(factors):
    flat = np.ravel_multi_index(np.asarray(factors).T, sizes)
    images = np.zeros((len(flat), 8, 8, channels), np.uint8)
    images[:, 0, :6] = ((flat[:, None] >> np.arange(6)) & 1)[..., None] * on
    return images

  _prepare_fake_tfds(tmp_path, class_name, "2.0.0", {"train": spell(grid[order])},
                     {k: (n, {"train": grid[order, i]}) for i, (k, n) in enumerate(zip(keys,
                                                                                    sizes))})
  dataset = data.load(_config(name=name, data_dir=str(tmp_path), preprocessing="float",
                              validation_size=3, test_size=5))
  assert DATASETS.get(name).source == "tfds"
  assert dataset.info["sizes"] == {"train": 16, "validation": 3, "test": 5}
  assert dataset.info["factor_sizes"] == list(sizes) and len(dataset.info["factor_names"]) == len(
      sizes)
  np.testing.assert_array_equal(dataset.test, spell(dataset.test_factors) / on)
  everything = np.concatenate([dataset.train, dataset.validation, dataset.test])
  assert _multiset(everything) == _multiset((spell(grid) / on).astype(np.float32))
  asked = grid[[5, 0, 17]]
  np.testing.assert_array_equal(dataset.render(asked), spell(asked) / on)
  # The same test rows whatever the validation size; a test set as large as the data is refused.
  again = data.load(_config(name=name, data_dir=str(tmp_path), preprocessing="float",
                            validation_size=7, test_size=5))
  np.testing.assert_array_equal(again.test_factors, dataset.test_factors)
  _assert_one_line_error(r"data.test_size=24 must be smaller than the 24 images", name=name,
                         data_dir=str(tmp_path), test_size=24)


def test_factor_data_missing_a_combination_shows_none():
  from elbo_jax.data.sources import factor_lookup
  grid = np.stack(np.unravel_index(np.arange(6), (2, 3)), -1)
  assert factor_lookup(None, grid, (2, 3)) is not None
  assert factor_lookup(None, grid[1:], (2, 3)) is None
  assert factor_lookup(None, grid[[0, 0, 1, 2, 3, 4]], (2, 3)) is None


def test_tfds_omniglot_and_celeb_a_are_resized(tmp_path):
  white = np.full((3, 105, 105, 3), 255, np.uint8)
  _prepare_fake_tfds(tmp_path, "Omniglot", "3.0.0", {"train": white, "test": white})
  omniglot = data.load(_config(name="omniglot", data_dir=str(tmp_path), preprocessing="uint8",
                               validation_size=1))
  assert omniglot.shape == (28, 28, 1) and not omniglot.test.any()  # ink is 1, paper is 0
  faces = np.random.default_rng(0).integers(0, 256, (2, 218, 178, 3), dtype=np.uint8)
  _prepare_fake_tfds(tmp_path, "CelebA", "2.1.0", {"train": faces, "validation": faces,
                                                   "test": faces})
  celeb_a = data.load(_config(name="celeb_a", data_dir=str(tmp_path), preprocessing="float"))
  assert celeb_a.shape == (64, 64, 3) and celeb_a.info["sizes"]["validation"] == 2


def _dataset(x, preprocessing):
  return data.Dataset(x, x, x, preprocessing, {})


def test_check_compatible_accepts_matching_data():
  floats = _dataset(np.zeros((2, 4, 4, 1), np.float32), "float")
  data.check_compatible(floats, "unit_interval", "bernoulli")
  data.check_compatible(floats, "real", "gaussian")
  data.check_compatible(_dataset(np.zeros((2, 4, 4, 1), np.uint8), "uint8"), "uint8", "categorical")


def test_check_compatible_names_the_fields_to_change():
  floats = _dataset(np.zeros((2, 4, 4, 1), np.float32), "float")
  uint8 = _dataset(np.zeros((2, 4, 4, 1), np.uint8), "uint8")
  with pytest.raises(ConfigError) as error:
    data.check_compatible(floats, "uint8", "categorical")
  assert str(error.value) == (
      "likelihood.name='categorical' needs 8-bit integer data; data.preprocessing='float' gives "
      "floats; use data.preprocessing='uint8'"
  )
  with pytest.raises(ConfigError, match=r"likelihood.name='bernoulli' needs data in \[0, 1\]; "
                     "data.preprocessing='uint8'"):
    data.check_compatible(uint8, "unit_interval", "bernoulli")
  with pytest.raises(ConfigError, match="likelihood.name='gaussian' needs real-valued data"):
    data.check_compatible(uint8, "real", "gaussian")
  with pytest.raises(ValueError, match="data_kind"):
    data.check_compatible(floats, "binary")


def test_a_process_reads_only_its_training_rows_and_they_are_the_whole_sets_rows(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (60, 4, 4, 1)).astype(np.uint8)
  path = tmp_path / "d.npz"
  np.savez(path, train=images[:40], test=images[40:])
  config = _config(path=str(path), split="burda", validation_size=6,
                   preprocessing="static_binarization")
  whole = data.load(config)
  part = data.load(config, train_slice=lambda n: (n // 3, n // 2))
  assert (whole.num_train, part.num_train, part.train_offset) == (34, 34, 11)
  np.testing.assert_array_equal(part.train, whole.train[11:17])
  np.testing.assert_array_equal(part.train_rows(12, 14), whole.train[12:14])
  np.testing.assert_array_equal(part.validation, whole.validation)
  assert part.info == whole.info
  with pytest.raises(ValueError, match="not among the rows held"):
    part.train_rows(0, 5)
