"""Checks the claims the two demos make, and that their scripts write non-empty PNGs."""

import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import elbo_gap, kl_direction

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kl_fits(tmp_path_factory):
  out = tmp_path_factory.mktemp("kl_direction") / "kl_direction.png"
  results = kl_direction.run(str(out), seed=0, num_inits=8)
  return results, out


@pytest.fixture(scope="module")
def gap(tmp_path_factory):
  out = tmp_path_factory.mktemp("elbo_gap") / "elbo_gap.png"
  return {k: np.asarray(v, np.float64) for k, v in elbo_gap.run(str(out), seed=0).items()}, out


def test_forward_kl_fits_agree_and_match_moments(kl_fits):
  results, _ = kl_fits
  mean, std, kl = (np.asarray(a) for a in results["forward"])
  p_mean, p_std = kl_direction.mixture_moments()
  np.testing.assert_allclose(mean, float(p_mean), atol=1e-3)
  np.testing.assert_allclose(std, float(p_std), rtol=1e-3)
  np.testing.assert_allclose(kl, kl[0], atol=1e-5)


def test_reverse_kl_fits_lock_onto_distinct_modes(kl_fits):
  results, _ = kl_fits
  mean, std, kl = (np.asarray(a) for a in results["reverse"])
  weights, modes, mode_stds = (np.asarray(a) for a in kl_direction.MIXTURE)
  nearest = np.argmin(np.abs(mean[:, None] - modes[None, :]), axis=1)
  np.testing.assert_allclose(mean, modes[nearest], atol=0.05)
  np.testing.assert_allclose(std, mode_stds[nearest], atol=0.05)
  # A q sitting on one well-separated component pays KL ~ -log(weight) for the mass it ignores.
  np.testing.assert_allclose(kl, -np.log(weights[nearest]), atol=0.01)
  assert len(set(nearest.tolist())) >= 2
  # The forward optimum (the moment match) is a worse reverse-KL fit than any mode-locked q.
  p_mean, p_std = kl_direction.mixture_moments()
  kl_at_moment_match = kl_direction.kl("reverse", p_mean[None], jnp.log(p_std)[None])
  assert np.all(kl < float(kl_at_moment_match[0]))


def test_kl_rejects_unknown_direction():
  with pytest.raises(ValueError, match="direction"):
    kl_direction.kl("sideways", jnp.zeros(1), jnp.zeros(1))


def test_kl_direction_png_written(kl_fits):
  _, out = kl_fits
  assert out.stat().st_size > 10_000


def test_elbo_gap_equals_kl_and_closes(gap):
  path, _ = gap
  np.testing.assert_allclose(path["log_px"] - path["elbo"], path["kl"], atol=1e-4)
  assert np.all(path["elbo"] <= path["log_px"] + 1e-4)
  assert path["kl"][0] > 1.0  # the prior is a poor guess, or the demo shows nothing
  assert np.all(np.diff(path["kl"]) <= 1e-5)  # convex in t with its minimum at t = 1
  assert abs(path["log_px"][-1] - path["elbo"][-1]) < elbo_gap.FINAL_GAP_TOL
  assert abs(path["kl"][-1]) < elbo_gap.FINAL_GAP_TOL


def test_elbo_gap_png_written(gap):
  _, out = gap
  assert out.stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize("module,extra", [("kl_direction", ["--num_inits=3"]), ("elbo_gap", [])])
def test_script_entry_point(module, extra, tmp_path):
  out = tmp_path / f"{module}.png"
  python_path = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
  env = {**os.environ, "PYTHONPATH": python_path}
  proc = subprocess.run(
      [sys.executable, "-m", f"experiments.{module}", f"--out={out}", "--seed=1", *extra],
      check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  assert f"wrote {out}" in proc.stdout
  assert out.stat().st_size > 10_000
