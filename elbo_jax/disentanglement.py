"""Disentanglement metrics with the definitions of Locatello et al. (2019, appendix), as
google-research/disentanglement_lib computes them (files under
disentanglement_lib/evaluation/metrics/, read at the snapshot's HEAD; definitions re-implemented).

Inputs are plain numpy arrays: codes [N, D] (posterior means) and factors [N, K] (integer factor
values). SAP and DCI fit predictors, so they take a training set and a held-out set. The two
intervention scores (BetaVAE, FactorVAE) need data with one factor held fixed, through two
callables:

  sample_factors(rng, n) -> [n, K] int   draws factor vectors; rng is a np.random.Generator
  observe(factors [n, K]) -> [n, D]      renders them and encodes: the codes of those factors

(e.g. `sprites.sample_factors` and a function that composes `sprites.render` with the encoder's
posterior mean). Numpy and scikit-learn only: these run once per evaluation. `test_set_scores`,
at the end, reports them for every run on data with known factors.
"""

from __future__ import annotations

import jax
import numpy as np
import scipy.stats
from sklearn import ensemble, linear_model, metrics, preprocessing, svm

from elbo_jax import evaluation, results

_OBSERVE_ROWS = 8192  # rows per observe() call in the intervention scores


def _check(codes, factors, name="codes"):
  codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
  if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
    raise ValueError(f"{name} must be [N, D] and factors [N, K] with the same N; got "
                     f"{codes.shape} and {factors.shape}")
  if not np.issubdtype(factors.dtype, np.integer):
    raise ValueError(f"factors must be integer (discrete) values; got dtype {factors.dtype}")
  return codes, factors


def histogram_discretize(codes, num_bins=20):
  """Each code dimension cut into num_bins equal-width bins over its range: [N, D] int.

  Checked against utils.py `_histogram_discretize` (np.digitize on np.histogram's left edges).
  """
  codes = np.asarray(codes, np.float64)
  return np.stack([np.digitize(c, np.histogram(c, num_bins)[1][:-1]) for c in codes.T], -1)


def mutual_info_matrix(codes, factors, num_bins=20):
  """I(discretised code_d; factor_k) in nats: [D, K] (utils.py `discrete_mutual_info`)."""
  codes, factors = _check(codes, factors)
  binned = histogram_discretize(codes, num_bins)
  return np.array([[metrics.mutual_info_score(f, c) for f in factors.T] for c in binned.T])


def mig(codes, factors, num_bins=20):
  """Mutual information gap (Chen et al. 2018), checked against metrics/mig.py.

  For each factor k: (largest - second-largest I(code_d; factor_k) over d) / H(factor_k), codes
  discretised into num_bins histogram bins; the mean over factors. Needs D >= 2.
  """
  return _mig(mutual_info_matrix(codes, factors, num_bins), factors)


def _mig(mi, factors):
  """MIG from the mutual information matrix mi [D, K] of codes with factors [N, K]."""
  if mi.shape[0] < 2:
    raise ValueError(f"codes must have at least 2 dimensions for MIG; got {mi.shape[0]}")
  entropy = np.array([metrics.mutual_info_score(f, f) for f in np.asarray(factors).T])
  top = np.sort(mi, axis=0)[::-1]
  return float(np.mean((top[0] - top[1]) / entropy))


def modularity(codes, factors, num_bins=20):
  """Modularity (Ridgeway & Mozer 2018), checked against metrics/modularity_explicitness.py.

  Per code d, with m_k = I(code_d; factor_k)^2 and k* its argmax:
  1 - sum_{k != k*} m_k / (m_k* (K - 1)), and 0 for a code with no information; mean over codes.
  """
  return _modularity(mutual_info_matrix(codes, factors, num_bins))


def _modularity(mi):
  """Modularity from the mutual information matrix mi [D, K] of codes with factors."""
  squared = np.square(mi)
  best = squared.max(axis=1)
  with np.errstate(divide="ignore", invalid="ignore"):
    score = 1.0 - (squared.sum(axis=1) - best) / (best * (squared.shape[1] - 1))
  return float(np.mean(np.where(best == 0.0, 0.0, score)))


def sap(codes, factors, codes_test, factors_test):
  """Separated attribute predictability (Kumar et al. 2018), checked against metrics/sap_score.py
  with discrete factors (continuous_factors=False, as in Locatello et al.).

  Score matrix [D, K]: test accuracy of a linear SVM (C=0.01, balanced classes) predicting factor
  k from code d alone; SAP is the mean over factors of the gap between its two best codes.
  """
  codes, factors = _check(codes, factors)
  codes_test, factors_test = _check(codes_test, factors_test, "codes_test")
  score = np.zeros((codes.shape[1], factors.shape[1]))
  for d in range(codes.shape[1]):
    for k in range(factors.shape[1]):
      clf = svm.LinearSVC(C=0.01, class_weight="balanced").fit(codes[:, d:d + 1], factors[:, k])
      score[d, k] = np.mean(clf.predict(codes_test[:, d:d + 1]) == factors_test[:, k])
  top = np.sort(score, axis=0)
  return float(np.mean(top[-1] - top[-2]))


def _importance_gbt(codes, y):
  """Feature importances [D] of gradient-boosted trees (sklearn defaults), and the model."""
  model = ensemble.GradientBoostingClassifier().fit(codes, y)
  return np.abs(model.feature_importances_), model


def _importance_logistic(codes, y):
  """|coefficients| [D] of a logistic regression on standardised codes, summed over classes."""
  model = linear_model.LogisticRegression(max_iter=1000).fit(codes, y)
  return np.abs(model.coef_).sum(axis=0), model


IMPORTANCES = {"gbt": _importance_gbt, "logistic": _importance_logistic}


def dci(codes, factors, codes_test, factors_test, importance="gbt"):
  """DCI disentanglement, completeness, informativeness (Eastwood & Williams 2018), checked
  against metrics/dci.py.

  importance: 'gbt' (default; gradient-boosted trees' feature importances, what
  disentanglement_lib and Locatello et al. report, nonlinear and invariant to monotone rescaling
  of each code) or 'logistic' (|coefficients| of a logistic regression on standardised codes:
  faster, but it sees only linear relations). With R [D, K] the importance matrix:
  disentanglement = sum_d rho_d (1 - H_K(R[d] / sum R[d])), rho_d = sum R[d] / sum R;
  completeness = sum_k rho_k (1 - H_D(R[:, k] / sum R[:, k])), rho_k = sum R[:, k] / sum R;
  informativeness = the predictors' accuracy (train and test), averaged over factors.
  Codes are standardised with the training set's mean and deviation first (disentanglement_lib
  does not; trees are unchanged by it, the logistic importances need it to be comparable).
  Returns {'disentanglement', 'completeness', 'informativeness_train', 'informativeness_test'}.
  """
  if importance not in IMPORTANCES:
    raise ValueError(f"importance must be one of {sorted(IMPORTANCES)}; got {importance!r}")
  codes, factors = _check(codes, factors)
  codes_test, factors_test = _check(codes_test, factors_test, "codes_test")
  scaler = preprocessing.StandardScaler().fit(codes)
  codes, codes_test = scaler.transform(codes), scaler.transform(codes_test)
  matrix = np.zeros((codes.shape[1], factors.shape[1]))
  train_acc, test_acc = [], []
  for k in range(factors.shape[1]):
    matrix[:, k], model = IMPORTANCES[importance](codes, factors[:, k])
    train_acc.append(np.mean(model.predict(codes) == factors[:, k]))
    test_acc.append(np.mean(model.predict(codes_test) == factors_test[:, k]))
  return {
      "disentanglement": _weighted_one_minus_entropy(matrix),
      "completeness": _weighted_one_minus_entropy(matrix.T),
      "informativeness_train": float(np.mean(train_acc)),
      "informativeness_test": float(np.mean(test_acc)),
  }


def _weighted_one_minus_entropy(matrix):
  """sum_r rho_r (1 - H(matrix[r] normalised), entropy in base matrix.shape[1]); rows weighted
  by their share rho_r of the total (uniform when the matrix is all zero)."""
  per_row = 1.0 - scipy.stats.entropy(matrix.T + 1e-11, base=matrix.shape[1])
  weights = matrix if matrix.sum() > 0 else np.ones_like(matrix)
  return float(np.sum(per_row * weights.sum(axis=1) / weights.sum()))


def _observe_batches(observe, factors):
  """codes [P, B, D] of factors [P, B, K], calling observe on at most _OBSERVE_ROWS rows."""
  p, b, k = factors.shape
  flat = factors.reshape(-1, k)
  codes = np.concatenate([np.asarray(observe(flat[i:i + _OBSERVE_ROWS]), np.float64)
                          for i in range(0, len(flat), _OBSERVE_ROWS)])
  return codes.reshape(p, b, -1)


def _interventions(rng, sample_factors, num_points, batch_size):
  """For num_points draws: the index of a factor to fix [P] (uniform) and a batch of factor
  vectors [P, B, K]."""
  factors = sample_factors(rng, num_points * batch_size)
  factors = np.asarray(factors).reshape(num_points, batch_size, -1)
  return rng.integers(0, factors.shape[-1], num_points), factors


def _beta_vae_points(rng, sample_factors, observe, batch_size, num_points):
  """Features [P, D] (mean |code(a) - code(b)| over a batch of pairs sharing the fixed factor)
  and labels [P] (the fixed factor)."""
  fixed, first = _interventions(rng, sample_factors, num_points, batch_size)
  _, second = _interventions(rng, sample_factors, num_points, batch_size)
  rows = np.arange(num_points)
  second[rows, :, fixed] = first[rows, :, fixed]
  diff = np.abs(_observe_batches(observe, first) - _observe_batches(observe, second))
  return diff.mean(axis=1), fixed


def beta_vae_score(rng, sample_factors, observe, batch_size=64, num_train=10000, num_eval=5000):
  """BetaVAE score (Higgins et al. 2017), checked against metrics/beta_vae.py (the sklearn one).

  Each point fixes one factor (uniformly chosen) across batch_size pairs of otherwise independent
  factor vectors; its feature is the mean absolute code difference within the pairs. A
  logistic regression (sklearn defaults) learns the fixed factor from num_train points; the score
  is its accuracy on num_eval fresh points. rng: np.random.Generator; sample_factors, observe:
  see the module docstring. Returns {'train_accuracy', 'eval_accuracy'}; chance is 1 / K.
  """
  x, y = _beta_vae_points(rng, sample_factors, observe, batch_size, num_train)
  model = linear_model.LogisticRegression().fit(x, y)
  x_eval, y_eval = _beta_vae_points(rng, sample_factors, observe, batch_size, num_eval)
  return {"train_accuracy": float(model.score(x, y)),
          "eval_accuracy": float(model.score(x_eval, y_eval))}


def _factor_vae_votes(rng, sample_factors, observe, batch_size, num_points, scale, active):
  """votes [K, D_active]: how often fixing factor k gave active code d the least relative
  variance."""
  fixed, factors = _interventions(rng, sample_factors, num_points, batch_size)
  rows = np.arange(num_points)
  factors[rows, :, fixed] = factors[rows, :1, fixed]
  codes = _observe_batches(observe, factors)[..., active] / scale[active]
  least = np.argmin(np.var(codes, axis=1, ddof=1), axis=1)
  votes = np.zeros((factors.shape[-1], int(active.sum())), np.int64)
  np.add.at(votes, (fixed, least), 1)
  return votes


def factor_vae_score(rng, sample_factors, observe, batch_size=64, num_train=10000,
                     num_eval=5000, num_variance_estimate=10000, prune_threshold=0.05):
  """FactorVAE score (Kim & Mnih 2018), checked against metrics/factor_vae.py and the
  unsupervised_study_v1 metric config (batch 64, 10000 / 5000 points, prune threshold 0.05).

  Codes are divided by their standard deviation over num_variance_estimate random samples; codes
  with a standard deviation below prune_threshold (collapsed to the prior) are dropped. Each point
  fixes one factor (uniformly chosen) across a batch and votes for the active code with the least
  variance; the classifier maps each code to its majority factor, and the score is its accuracy on
  num_eval fresh votes. Returns {'train_accuracy', 'eval_accuracy', 'num_active_dims'}; chance
  is 1 / K, and a representation with no active code scores 0.
  """
  if batch_size < 2 or num_variance_estimate < 2:
    raise ValueError(f"batch_size and num_variance_estimate must be >= 2 (variances); got "
                     f"{batch_size} and {num_variance_estimate}")
  factors = np.asarray(sample_factors(rng, num_variance_estimate))
  sample = _observe_batches(observe, factors[None])[0]
  scale = np.sqrt(np.var(sample, axis=0, ddof=1))
  active = scale >= prune_threshold
  if not active.any():
    return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
  args = (rng, sample_factors, observe, batch_size)
  train = _factor_vae_votes(*args, num_train, scale, active)
  classifier = np.argmax(train, axis=0)  # each active code's majority factor
  cols = np.arange(train.shape[1])
  evaluation = _factor_vae_votes(*args, num_eval, scale, active)
  return {"train_accuracy": float(train[classifier, cols].sum() / train.sum()),
          "eval_accuracy": float(evaluation[classifier, cols].sum() / evaluation.sum()),
          "num_active_dims": int(active.sum())}


# --- On a trained run's test set (results.json's "test" section) -------------------------------

@results.register("mig", label="MIG", digits=3, also=(
    ("modularity", "modularity"), ("sap", "SAP"),
    ("dci_disentanglement", "DCI disentanglement"), ("dci_completeness", "DCI completeness"),
    ("dci_informativeness", "DCI informativeness (test)"), ("factor_vae", "FactorVAE score"),
    ("beta_vae", "BetaVAE score")))
def test_set_scores(test: results.TestSet) -> dict:
  """The scores of the test set's posterior means against its factors, for data with known
  factors (`Dataset.test_factors`), with each latent's mutual information with each factor
  ("factor_mutual_info", [D, K] nats, drawn as factor_mutual_info.png); {} otherwise. SAP and DCI
  fit their predictors on the first half of the test set and score them on the second. For
  generated data (`Dataset.render`) the FactorVAE and BetaVAE scores observe newly rendered
  images (`eval.factor_vae_points`, the FactorVAE variance estimate from 5 times as many;
  `eval.beta_vae_points`), each scored on half as many fresh points."""
  factors = test.dataset.test_factors
  if factors is None:
    return {}
  codes = evaluation.posterior_means(test.model, test.params, test.x, test.key,
                                     batch_size=test.config.eval.batch_size, mesh=test.mesh)
  half = len(codes) // 2
  fit, held_out = (codes[:half], factors[:half]), (codes[half:], factors[half:])
  scores = dci(*fit, *held_out, importance=test.config.eval.dci_importance)
  mi = mutual_info_matrix(codes, factors)  # [D, K] nats, read by MIG and modularity alike
  out = {"mig": _mig(mi, factors), "modularity": _modularity(mi),
         "factor_mutual_info": mi.tolist(), "sap": sap(*fit, *held_out),
         "dci_disentanglement": scores["disentanglement"],
         "dci_completeness": scores["completeness"],
         "dci_informativeness": scores["informativeness_test"]}
  if test.dataset.render is not None:
    out |= _intervention_scores(test)
  return out


def _intervention_scores(test: results.TestSet) -> dict:
  """The FactorVAE and BetaVAE scores (eval accuracies) on newly rendered interventions."""
  sizes = test.dataset.info["factor_sizes"]

  def sample_factors(rng, n):
    return np.stack([rng.integers(0, size, n) for size in sizes], -1)

  def observe(f):
    return evaluation.posterior_means(test.model, test.params, test.dataset.render(f),
                                      test.key, batch_size=500, mesh=test.mesh)

  seed = np.random.default_rng(np.asarray(jax.random.key_data(test.key)))
  out = {}
  points = test.config.eval.factor_vae_points
  if points:
    out["factor_vae"] = factor_vae_score(
        seed, sample_factors, observe, num_train=points, num_eval=max(points // 2, 1),
        num_variance_estimate=5 * points)["eval_accuracy"]
  points = test.config.eval.beta_vae_points
  if points:
    out["beta_vae"] = beta_vae_score(seed, sample_factors, observe, num_train=points,
                                     num_eval=max(points // 2, 1))["eval_accuracy"]
  return out
