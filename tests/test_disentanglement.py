"""Disentanglement metrics on synthetic codes whose answers are known: the code is the factors,
a rotation mixes two of them, a code independent of them, a permuted and rescaled code."""

import numpy as np
import pytest

from elbo_jax import disentanglement as dm
from elbo_jax.data import sprites

SIZES = (4, 6, 10)
K = len(SIZES)
THETA = np.pi / 4
ROTATION = np.eye(K)
ROTATION[:2, :2] = [[np.cos(THETA), -np.sin(THETA)], [np.sin(THETA), np.cos(THETA)]]
SCALE, SHIFT, PERM = np.array([3.0, 0.5, 7.0]), np.array([1.0, -2.0, 5.0]), [2, 0, 1]


def sample_factors(rng, n):
  return np.stack([rng.integers(0, size, n) for size in SIZES], -1)


def identity(f):
  return f.astype(np.float64)


def rotated(f):
  """Standardise each factor (uniform on 0..s-1), then turn factors 0 and 1 by 45 degrees."""
  sizes = np.array(SIZES)
  std = (f - (sizes - 1) / 2) / np.sqrt((sizes**2 - 1) / 12)
  return std @ ROTATION.T


def permuted_rescaled(f):
  return (identity(f) * SCALE + SHIFT)[:, PERM]


def independent(seed):
  noise = np.random.default_rng(seed)
  return lambda f: noise.standard_normal((len(f), K))


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  return sample_factors(rng, 4000), sample_factors(rng, 1000)


def _codes(observe, data, n_train=None):
  train, test = data
  train = train[:n_train]
  return observe(train), train, observe(test), test


def rotated_moved(f):
  return (rotated(f) * 4.0)[:, PERM]


@pytest.fixture(scope="module")
def dci_scores(data):
  """DCI with gradient-boosted trees (seconds each) on 400 training points, once per code."""
  cases = {"identity": identity, "rotated": rotated, "rotated_moved": rotated_moved,
           "independent": independent(6)}
  return {name: dm.dci(*_codes(observe, data, n_train=400)) for name, observe in cases.items()}


def test_code_equal_to_factors_scores_near_one(data, dci_scores):
  codes, factors, codes_test, factors_test = _codes(identity, data)
  # Each discretised code carries its factor's whole entropy (<= 20 values each); the others'
  # plug-in MI is only the finite-sample bias, ~(20 - 1)(s - 1) / (2 N) nats.
  assert dm.mig(codes, factors) > 0.98
  assert dm.modularity(codes, factors) > 0.98
  scores = dci_scores["identity"]
  assert scores["disentanglement"] > 0.95 and scores["completeness"] > 0.95
  assert scores["informativeness_test"] == 1.0


def test_sap_of_a_perfect_binary_code_is_one_minus_chance():
  # SAP's scores are classification accuracies: the right code predicts its binary factor
  # perfectly, every other code only at chance (0.5 for balanced classes), so the gap is 1/2.
  rng = np.random.default_rng(1)
  codes = rng.integers(0, 2, (2000, 3))
  assert dm.sap(codes[:1500], codes[:1500], codes[1500:], codes[1500:]) == pytest.approx(
      0.5, abs=0.04)


def test_rotation_mixing_two_factors_lowers_scores(data, dci_scores):
  codes, factors, codes_test, factors_test = _codes(rotated, data)
  ident = _codes(identity, data)
  # Factors 0, 1 share their information over two codes: their gaps collapse, factor 2's stays 1.
  assert abs(dm.mig(codes, factors) - 1 / 3) < 0.1
  assert dm.modularity(codes, factors) < dm.modularity(ident[0], ident[1]) - 0.1
  assert dm.sap(codes, factors, codes_test, factors_test) < 0.5 * dm.sap(*ident)
  scores = dci_scores["rotated"]
  assert scores["disentanglement"] < 0.75 and scores["completeness"] < 0.75
  assert scores["informativeness_test"] > 0.95  # rotation loses no information


@pytest.mark.parametrize("score_fn", [dm.beta_vae_score, dm.factor_vae_score])
def test_intervention_scores_on_known_codes(score_fn):
  def score(observe, seed=2):
    return score_fn(np.random.default_rng(seed), sample_factors, observe, num_train=400,
                    num_eval=600)["eval_accuracy"]

  assert score(identity) == 1.0
  assert score(permuted_rescaled) == 1.0
  # At 45 degrees, fixing factor 0 or factor 1 leaves the same statistics on codes 0 and 1, so
  # the two are told apart at chance: accuracy (K - 2) / K + (2 / K) / 2 = (K - 1) / K.
  assert abs(score(rotated) - (K - 1) / K) < 0.08
  assert abs(score(independent(3)) - 1 / K) < 0.08  # chance level


def test_beta_vae_score_misses_an_uncoded_factor_that_factor_vae_score_catches():
  # Kim & Mnih (2018, section 4): the BetaVAE score reaches 100% with only K - 1 of K factors
  # disentangled, since the classifier names the last factor when no code difference vanishes.
  # The FactorVAE score's majority vote cannot: fixing the uncoded factor votes at random.
  def missing_last(f):
    return f[:, :-1].astype(np.float64)

  kwargs = dict(num_train=400, num_eval=600)
  assert dm.beta_vae_score(np.random.default_rng(2), sample_factors, missing_last,
                           **kwargs)["eval_accuracy"] == 1.0
  factor_vae = dm.factor_vae_score(np.random.default_rng(2), sample_factors, missing_last,
                                   **kwargs)["eval_accuracy"]
  assert abs(factor_vae - (K - 1) / K) < 0.08


def test_factor_vae_score_is_invariant_to_permuting_and_rescaling_codes():
  def run(observe):
    return dm.factor_vae_score(np.random.default_rng(4), sample_factors, observe, num_train=200,
                               num_eval=200)

  assert run(rotated) == run(lambda f: (rotated(f) * SCALE + SHIFT)[:, PERM])


def test_factor_vae_score_prunes_collapsed_codes():
  collapsed = dm.factor_vae_score(np.random.default_rng(5), sample_factors,
                                  lambda f: np.zeros((len(f), 2)), num_train=10, num_eval=10)
  assert collapsed == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
  # A collapsed code beside the factors is dropped and the rest still scores 1.
  padded = dm.factor_vae_score(np.random.default_rng(5), sample_factors,
                               lambda f: np.hstack([identity(f), np.full((len(f), 1), 0.01)]),
                               num_train=100, num_eval=100)
  assert padded["num_active_dims"] == K and padded["eval_accuracy"] == 1.0


def test_independent_code_scores_near_zero(data, dci_scores):
  codes, factors, codes_test, factors_test = _codes(independent(6), data)
  assert dm.mig(codes, factors) < 0.02
  assert dm.sap(codes, factors, codes_test, factors_test) < 0.05
  scores = dci_scores["independent"]
  assert scores["disentanglement"] < 0.1 and scores["completeness"] < 0.1
  assert abs(scores["informativeness_test"] - np.mean(1 / np.array(SIZES))) < 0.05


def test_modularity_of_an_independent_code_is_set_by_the_mi_bias(data):
  # Modularity does not ask whether a code is informative. For an independent code each plug-in
  # MI is its bias, (20 - 1)(s_k - 1) / (2 N) to first order (Miller-Madow), so per code
  # 1 - sum_{k != k*} (s_k - 1)^2 / ((s_k* - 1)^2 (K - 1)) = 1 - (9 + 25) / (81 * 2) = 0.79.
  codes, factors, _, _ = _codes(independent(7), data)
  assert abs(dm.modularity(codes, factors) - (1 - (9 + 25) / (81 * 2))) < 0.05


def test_metrics_are_invariant_to_permuting_and_rescaling_codes(data, dci_scores):
  ident = _codes(identity, data)
  moved = _codes(permuted_rescaled, data)
  assert dm.mig(moved[0], moved[1]) == dm.mig(ident[0], ident[1])
  assert dm.modularity(moved[0], moved[1]) == dm.modularity(ident[0], ident[1])
  np.testing.assert_array_equal(dm.mutual_info_matrix(moved[0], moved[1]),
                                dm.mutual_info_matrix(ident[0], ident[1])[PERM])
  rot = _codes(rotated, data)
  rot_moved = (rot[0][:, PERM], rot[1], rot[2][:, PERM], rot[3])
  assert dm.sap(*rot_moved) == pytest.approx(dm.sap(*rot))  # each code's classifier is its own
  # Trees split on thresholds, so only ties between codes can tell the two apart.
  for name, value in dci_scores["rotated"].items():
    assert dci_scores["rotated_moved"][name] == pytest.approx(value, abs=0.01)


def test_logistic_importance_matches_trees_on_clean_codes(data):
  codes, factors, codes_test, factors_test = _codes(identity, data, n_train=1000)
  scores = dm.dci(codes, factors, codes_test, factors_test, importance="logistic")
  assert scores["disentanglement"] > 0.9 and scores["completeness"] > 0.9


def test_sprite_factors_read_by_a_handmade_encoder():
  # End to end through the interface: a hand-made 'encoder' reading the pixel count and the
  # centroid of a sprite captures scale, pos_x and pos_y, so fixing one of those is detected,
  # while fixing shape or orientation (which it does not read) votes for a code that the
  # majority classifier gives to another factor: the score is about 3 of 5.
  def observe(f):
    images = sprites.render(f, resolution=16)[..., 0]
    mass = images.sum((1, 2))
    grid = np.arange(16)
    return np.stack([mass, (images.sum(1) * grid).sum(1) / mass,
                     (images.sum(2) * grid).sum(1) / mass], -1)

  scores = dm.factor_vae_score(np.random.default_rng(8), sprites.sample_factors, observe,
                               num_train=300, num_eval=300, num_variance_estimate=2000)
  assert abs(scores["eval_accuracy"] - 3 / 5) < 0.1


@pytest.mark.parametrize("call,match", [
    (lambda: dm.mig(np.zeros((5, 2)), np.zeros((4, 2), int)), "codes must be"),
    (lambda: dm.mig(np.zeros((5, 2)), np.zeros((5, 2))), "integer"),
    (lambda: dm.mig(np.zeros((5, 1)), np.zeros((5, 2), int)), "at least 2"),
    (lambda: dm.dci(*(np.zeros((5, 2), int),) * 4, importance="lasso"), "importance must be"),
    (lambda: dm.factor_vae_score(np.random.default_rng(0), sample_factors, identity,
                                 batch_size=1), "batch_size and num_variance_estimate"),
])
def test_bad_input_is_rejected(call, match):
  with pytest.raises(ValueError, match=match):
    call()
