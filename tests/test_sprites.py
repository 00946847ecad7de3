"""The procedural dSprites-like generator (shapes, dtypes, each factor's effect, determinism) and
the `sprites` data set built on it, whose runs report disentanglement scores."""

import numpy as np
import pytest

from configs import sprites_vae
from elbo_jax import data as data_lib
from elbo_jax import results as results_lib
from elbo_jax.data import sprites
from elbo_jax.registry import ConfigError
from elbo_jax.train import train_and_evaluate

BASE = np.array([0, 3, 0, 16, 16])  # square, middle scale, angle 0, centred


def _vary(k, values, base=BASE):
  f = np.tile(base, (len(values), 1))
  f[:, k] = values
  return f


def _centroid(image):
  rows, cols = np.nonzero(image[..., 0])
  return cols.mean(), rows.mean()


def test_generate_shapes_dtypes_and_sizes():
  images, factors, sizes = sprites.generate(50, seed=1, resolution=16)
  assert images.shape == (50, 16, 16, 1) and images.dtype == np.float32
  assert set(np.unique(images)) <= {0.0, 1.0}
  assert factors.shape == (50, 5) and factors.dtype == np.int64
  assert sizes == (3, 6, 40, 32, 32)
  assert np.all(factors < np.array(sizes)) and np.all(factors >= 0)
  assert len({tuple(f) for f in factors}) == 50  # drawn without replacement
  assert np.all(images.sum((1, 2, 3)) > 0)  # every shape is visible, even at 16 pixels


def test_generate_is_deterministic_and_seeded():
  a_img, a_f, _ = sprites.generate(20, seed=3, resolution=16)
  b_img, b_f, _ = sprites.generate(20, seed=3, resolution=16)
  c_img, c_f, _ = sprites.generate(20, seed=4, resolution=16)
  np.testing.assert_array_equal(a_img, b_img)
  np.testing.assert_array_equal(a_f, b_f)
  assert not np.array_equal(a_f, c_f)


@pytest.mark.parametrize("k,axis", [(3, 0), (4, 1)])
def test_position_moves_the_centroid_right_and_down(k, axis):
  images = sprites.render(_vary(k, [0, 10, 20, 31]), resolution=32)
  coords = np.array([_centroid(im)[axis] for im in images])
  assert np.all(np.diff(coords) > 5)  # ~ (32 - 2 * margin * 32) / 31 * 10 pixels per 10 steps
  other = np.array([_centroid(im)[1 - axis] for im in images])
  np.testing.assert_allclose(other, other[0], atol=0.5)


def test_larger_scale_has_more_pixels_on():
  for shape in range(3):
    base = BASE.copy()
    base[0] = shape
    counts = sprites.render(_vary(1, range(6), base), resolution=64).sum((1, 2, 3))
    assert np.all(np.diff(counts) > 0), (shape, counts)
    # Area grows as scale^2: scale 1 against scale 0.5 is 4x, up to pixelisation.
    assert 3.0 < counts[-1] / counts[0] < 5.5


def test_square_rotated_a_quarter_turn_is_the_same_up_to_pixelisation():
  # 90 degrees is not on the 40-angle grid, so turn by grid steps and compare the angles just
  # either side of it with the upright square: a quarter turn of a square is the square.
  images = sprites.render(_vary(2, [0, 9, 10, 39]), resolution=64)
  upright = images[0]
  for turned in images[1:3]:
    assert np.mean(upright != turned) < 0.02
  np.testing.assert_array_equal(images[3], upright)  # orientation 2 pi is orientation 0


def test_rotation_changes_the_ellipse():
  ellipse = BASE.copy()
  ellipse[0] = 1
  images = sprites.render(_vary(2, [0, 10], ellipse), resolution=32)
  upright, quarter = images[0, ..., 0], images[1, ..., 0]
  rows, cols = np.nonzero(upright)
  assert np.ptp(cols) > 1.5 * np.ptp(rows)  # wide at angle 0
  rows, cols = np.nonzero(quarter)
  assert np.ptp(rows) > 1.5 * np.ptp(cols)  # tall near 90 degrees


def test_heart_points_down_and_shapes_differ():
  images = sprites.render(_vary(0, [0, 1, 2]), resolution=32)
  assert len({im.tobytes() for im in images}) == 3
  heart = images[2, ..., 0]
  widths = heart.sum(1)
  rows = np.nonzero(widths)[0]
  # Widest in the upper half (the lobes), narrowest at the bottom row (the point).
  assert np.argmax(widths) < rows.mean() and widths[rows[-1]] <= 2


def test_every_shape_stays_inside_the_image():
  # Largest scale at the corners of the position grid, at every angle: nothing touches the border.
  f = sprites.factor_grid(strides=(1, 5, 1, 31, 31))
  images = sprites.render(f[f[:, 1] == 5], resolution=32)[..., 0]
  border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], 1)
  assert border.sum() == 0


@pytest.mark.parametrize("resolution", [8, 16])
def test_every_sprite_shows_at_coarse_resolutions(resolution):
  # The smallest shapes at every angle and a spread of positions: none renders empty.
  f = sprites.factor_grid(strides=(1, 5, 1, 3, 3))
  assert np.all(sprites.render(f, resolution).sum((1, 2, 3)) > 0)


def test_factor_grid_enumerates_and_subsamples():
  full = sprites.factor_grid()
  assert full.shape == (3 * 6 * 40 * 32 * 32, 5)
  flat = np.ravel_multi_index(tuple(full.T), sprites.FACTOR_SIZES)
  np.testing.assert_array_equal(flat, np.arange(len(full)))  # each once, last factor fastest
  sub = sprites.factor_grid(strides=(1, 2, 10, 8, 8))
  assert sub.shape == (3 * 3 * 4 * 4 * 4, 5)
  np.testing.assert_array_equal(np.unique(sub[:, 2]), [0, 10, 20, 30])


def test_sample_factors_covers_each_range():
  f = sprites.sample_factors(np.random.default_rng(0), 5000)
  assert f.shape == (5000, 5)
  np.testing.assert_array_equal(f.max(0) + 1, sprites.FACTOR_SIZES)
  assert f.min() == 0


@pytest.mark.parametrize("factors,resolution,match", [
    (np.zeros((2, 4), int), 16, "factors must be"),
    (np.array([[0, 6, 0, 0, 0]]), 16, "scale must lie"),
    (np.zeros((2, 5)), 16, "integer indices"),
    (np.zeros((2, 5), int), 4, "resolution must be"),
])
def test_render_rejects_bad_input(factors, resolution, match):
  with pytest.raises(ValueError, match=match):
    sprites.render(factors, resolution)


def _sprites_config(**fields):
  c = data_lib.default_config()
  c.update({"name": "sprites", "resolution": 16, "num_examples": 500, **fields})
  return c


def test_the_sprites_data_set_keeps_each_test_images_factors():
  dataset = data_lib.load(_sprites_config())
  assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (400, 50, 50)
  assert dataset.test_factors.shape == (50, 5)
  np.testing.assert_array_equal(dataset.test, sprites.render(dataset.test_factors, 16))
  np.testing.assert_array_equal(dataset.render(dataset.test_factors[:3]), dataset.test[:3])
  assert dataset.info["factor_names"] == list(sprites.FACTOR_NAMES)
  assert dataset.info["factor_sizes"] == list(sprites.FACTOR_SIZES)
  # Without replacement: no combination of factors is in two splits.
  _, factors, _ = sprites.generate(500, seed=0, resolution=16)
  assert len(np.unique(factors, axis=0)) == 500
  assert data_lib.load(data_lib.default_config()).test_factors is None


@pytest.mark.parametrize("field, value, match", [
    ("resolution", 4, r"data.resolution=4 must be an integer >= 8"),
    ("num_examples", 5, r"data.num_examples=5 must lie in \[10, 737280\]"),
    ("num_examples", 0, r"data.num_examples=0"),
])
def test_sprites_options_are_refused_by_name(field, value, match):
  with pytest.raises(ConfigError, match=match):
    data_lib.load(_sprites_config(**{field: value}))


def test_a_sprites_run_reports_disentanglement_scores_and_the_kl_terms(tmp_path):
  results = train_and_evaluate(sprites_vae.get_config("smoke"), str(tmp_path))
  test = results["test"]
  for name in ("mig", "modularity", "sap", "dci_disentanglement", "dci_completeness",
               "dci_informativeness", "factor_vae", "beta_vae"):
    assert 0 <= test[name] <= 1, name
  assert {"mutual_info", "total_correlation"} <= set(test)
  assert results["data"]["factor_names"] == list(sprites.FACTOR_NAMES)
  assert f"MIG: {test['mig']:.3f}" in results_lib.printed_lines(test)
  assert np.asarray(test["factor_mutual_info"]).shape == (4, 5)  # [latents, factors]
  for figure in ("factor_mutual_info", "traversals"):
    assert (tmp_path / results["figures"][figure]).stat().st_size > 0
