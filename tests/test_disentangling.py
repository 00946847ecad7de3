"""beta-TCVAE, FactorVAE and DIP-VAE: the ELBO's terms per example, and batch penalties equal to
independent numpy computations of the minibatch-stratified total correlation, of the
discriminator's log density ratio and of the DIP covariances; FactorVAE's discriminator learns a
Gaussian's closed-form total correlation and rides through checkpoints and vectorised groups."""

import subprocess
import sys

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from scipy.special import logsumexp

from configs.ablations import disentanglement
from elbo_jax import ablation_plots, build, disentangling, objectives, sweep, train
from elbo_jax import data as data_lib
from elbo_jax import mesh as mesh_lib
from elbo_jax.ablation_plots import disentangling as disentangling_plots
from elbo_jax.registry import ConfigError
from tests.conftest import REPO, tiny_config

B = 16


@pytest.fixture(scope="module")
def setup():
  config = tiny_config()
  dataset = data_lib.load(config.data)
  model = build.build_model(config, dataset)
  x = dataset.train[:B]
  params = model.init(jax.random.key(0), x[0], jax.random.key(1))
  keys = jax.random.split(jax.random.key(2), B)
  return config, model, params, x, keys


def _terms(setup, **objective):
  _, model, params, x, keys = setup
  config = tiny_config(**{f"objective.{k}": v for k, v in objective.items()})
  per_example = objectives.from_config(model, config.objective)
  traced = {k: v for k, v in objective.items() if k in objectives.traced_options(objective["name"])}
  vmapped = jax.vmap(lambda x, k: per_example(params, x, k, 1.0, **traced))
  return per_example, jax.tree.map(np.asarray, vmapped(x, keys)), traced


def _numpy_mss_total_correlation(z, means, log_scales, n):
  """Chen et al.'s minibatch-stratified estimate of TC(q(z)), in float64 numpy."""
  z, means, log_scales = (np.asarray(a, np.float64) for a in (z, means, log_scales))
  m = len(z)
  pair = (-0.5 * np.log(2 * np.pi) - log_scales[None]
          - 0.5 * ((z[:, None] - means[None]) / np.exp(log_scales[None])) ** 2)  # [i, k, D]
  log_w = np.full((m, m), np.log(n - 1) - np.log(n * (m - 1)))
  np.fill_diagonal(log_w, -np.log(n))
  log_qz = logsumexp(pair.sum(-1) + log_w, axis=1)
  log_qz_dims = logsumexp(pair + log_w[..., None], axis=1)
  return np.mean(log_qz - log_qz_dims.sum(-1))


def test_beta_tcvae_is_the_elbo_plus_its_weight_minus_one_times_the_batch_tc(setup):
  _, elbo_terms, _ = _terms(setup, name="elbo")
  per_example, terms, traced = _terms(setup, name="beta_tcvae", tc_weight=4.0)
  for name in ("elbo", "log_px_given_z", "kl", "loss"):
    np.testing.assert_allclose(terms[name], elbo_terms[name], rtol=1e-6)
  n = 1400
  penalty = per_example.batch_loss(terms, dataset_size=n, **traced)
  tc = _numpy_mss_total_correlation(terms["z"], terms["q_mean"], terms["q_log_scale"], n)
  np.testing.assert_allclose(penalty, 3.0 * tc, rtol=1e-4, atol=1e-5)
  # tc_weight = 1 is the plain ELBO's loss.
  plain = objectives.reduce_loss(terms, batch_loss=lambda t: per_example.batch_loss(
      t, dataset_size=n, tc_weight=1.0))
  np.testing.assert_allclose(plain, elbo_terms["loss"].mean(), rtol=1e-6)


def _numpy_discriminator(params, z):
  """Logits [B, 2] of a stack of Dense layers with leaky ReLU (slope 0.2), in float64 numpy."""
  layers = params["params"]
  h = np.asarray(z, np.float64)
  for i in range(len(layers)):
    dense = layers[f"Dense_{i}"]
    h = h @ np.asarray(dense["kernel"], np.float64) + np.asarray(dense["bias"], np.float64)
    if i < len(layers) - 1:
      h = np.where(h > 0, h, 0.2 * h)
  return h


def _log_softmax(logits):
  return logits - logsumexp(logits, axis=1, keepdims=True)


def test_factor_vae_adds_gamma_times_the_discriminators_log_ratio_to_the_elbo(setup):
  _, elbo_terms, _ = _terms(setup, name="elbo")
  per_example, terms, traced = _terms(setup, name="factor_vae", factor_gamma=7.0,
                                      critic_hidden=(16, 8))
  for name in ("elbo", "log_px_given_z", "kl", "loss"):
    np.testing.assert_allclose(terms[name], elbo_terms[name], rtol=1e-6)
  critic = per_example.critic
  params = critic.init(jax.random.key(3))
  logits = _numpy_discriminator(params, terms["z"])
  np.testing.assert_allclose(
      per_example.batch_loss(terms, dataset_size=1400, critic_params=params, **traced),
      7.0 * np.mean(logits[:, 0] - logits[:, 1]), rtol=1e-4)
  # The discriminator's loss: cross-entropy of the batch's z (class 0) against the same z with
  # each column permuted on its own (class 1).
  key = jax.random.key(4)
  shuffled = np.asarray(disentangling.permute_dims(key, terms["z"]))
  expected = -0.5 * (_log_softmax(logits)[:, 0].mean()
                     + _log_softmax(_numpy_discriminator(params, shuffled))[:, 1].mean())
  np.testing.assert_allclose(critic.loss(params, terms, key), expected, rtol=1e-4)


def test_permuting_dims_shuffles_each_latent_across_the_batch_on_its_own():
  z = np.arange(64.0 * 3).reshape(64, 3)  # distinct values; column j holds 3i + j
  shuffled = np.asarray(disentangling.permute_dims(jax.random.key(0), z))
  for j in range(3):
    np.testing.assert_array_equal(np.sort(shuffled[:, j]), z[:, j])
  rows = (shuffled - np.arange(3)) // 3  # the row each entry came from
  assert not np.array_equal(rows[:, 0], rows[:, 1]) and not np.array_equal(rows[:, 1], rows[:, 2])


def test_the_discriminator_learns_the_total_correlation_of_a_correlated_gaussian():
  # The density-ratio trick: trained on draws of q(z) against their permuted copies, the
  # discriminator's mean log ratio on draws of q(z) is TC(q(z)), -log(1 - rho^2) / 2 for a
  # standard bivariate Gaussian with correlation rho.
  net = disentangling.Discriminator((64, 64))
  optimizer = optax.adam(3e-3, b1=0.5, b2=0.9)

  def step(carry, key, chol):
    params, opt_state = carry
    draw_key, permute_key = jax.random.split(key)
    z = jax.random.normal(draw_key, (256, 2)) @ chol.T
    grads = jax.grad(disentangling.discriminator_loss, argnums=1)(net, params, z, permute_key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  @jax.jit
  def fit(chol):
    params = net.init(jax.random.key(0), np.zeros(2, np.float32))
    keys = jax.random.split(jax.random.key(1), 1500)
    return jax.lax.scan(lambda c, k: step(c, k, chol), (params, optimizer.init(params)),
                        keys)[0][0]

  for rho in (0.0, 0.8):
    chol = np.linalg.cholesky(np.array([[1.0, rho], [rho, 1.0]], np.float32))
    z = np.asarray(jax.random.normal(jax.random.key(2), (20000, 2)) @ chol.T)
    logits = _numpy_discriminator(fit(chol), z)
    assert np.mean(logits[:, 0] - logits[:, 1]) == pytest.approx(-0.5 * np.log(1 - rho**2),
                                                                 abs=0.06), rho


def test_a_factor_vae_step_moves_the_discriminator_on_its_own_loss_and_the_vae_by_gamma():
  config = tiny_config(**{"objective.name": "factor_vae", "objective.critic_hidden": (16,)})
  dataset = data_lib.load(config.data)
  trainer = build.build_trainer([config], dataset)
  step = jax.jit(train.make_train_step(trainer, mesh_lib.make_mesh(jax.devices()[:1])))
  state = train.create_train_state(trainer.model, trainer.optimizer(), dataset.train[0],
                                   jax.random.key(0), critic=trainer.critic)
  hp = train.hyperparameters(config, trainer)
  batch, key = dataset.train[:100], jax.random.key(1)
  after = {g: step(state, batch, key, hp | {"objective": {"factor_gamma": np.float32(g)}})
           for g in (0.0, 5.0)}
  # The discriminator learns from its own loss only: the VAE's gamma does not move it.
  moved = jax.tree.leaves(after[0.0][0].critic["params"])
  assert not all(np.allclose(a, b) for a, b in zip(moved, jax.tree.leaves(
      state.critic["params"])))
  for a, b in zip(moved, jax.tree.leaves(after[5.0][0].critic["params"])):
    np.testing.assert_array_equal(a, b)
  assert np.isfinite(after[0.0][1]["critic_loss"]) and not after[0.0][1]["nonfinite"].any()
  # At gamma 0 the VAE takes the plain ELBO's step; at gamma 5 the TC estimate moves it.
  elbo_config = tiny_config()
  elbo_trainer = build.build_trainer([elbo_config], dataset)
  elbo_step = jax.jit(train.make_train_step(elbo_trainer, mesh_lib.make_mesh(jax.devices()[:1])))
  elbo_state, _ = elbo_step(state.replace(critic=None), batch, key,
                            train.hyperparameters(elbo_config, elbo_trainer))
  for a, b in zip(jax.tree.leaves(after[0.0][0].params), jax.tree.leaves(elbo_state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert not all(np.allclose(a, c) for a, c in zip(jax.tree.leaves(elbo_state.params),
                                                   jax.tree.leaves(after[5.0][0].params)))


@pytest.mark.slow  # two training runs; the step itself is checked in the default suite above
def test_a_factor_vae_run_resumes_its_discriminator_bitwise(tmp_path):
  config = tiny_config(**{"objective.name": "factor_vae", "objective.critic_hidden": (16,),
                          "objective.factor_gamma": 5.0, "training.num_epochs": 2})
  straight = str(tmp_path / "run")
  train.train_and_evaluate(config, straight)
  manager = ocp.CheckpointManager(f"{straight}/checkpoints")
  last, before = sorted(manager.all_steps())[::-1][:2]
  final = manager.restore(last, args=ocp.args.StandardRestore())
  initial = build.build_trainer([config], data_lib.load(config.data)).critic.init(
      jax.random.fold_in(train.split_seed(config.seed)["init"], 2))
  assert not np.allclose(final["critic"]["params"]["params"]["Dense_0"]["kernel"],
                         initial["params"]["Dense_0"]["kernel"])  # it trained
  manager.delete(last)  # as if killed after the checkpoint before the last
  manager.close()
  train.train_and_evaluate(config, straight)
  resumed = ocp.CheckpointManager(f"{straight}/checkpoints").restore(
      last, args=ocp.args.StandardRestore())
  for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)
  assert before < last


@pytest.mark.parametrize("dip_type", ["i", "ii"])
def test_dip_vae_penalises_the_covariance_of_the_means_or_of_q(setup, dip_type):
  per_example, terms, traced = _terms(setup, name="dip_vae", dip_type=dip_type, lambda_od=2.0,
                                      lambda_d=5.0)
  means = terms["q_mean"].astype(np.float64)
  cov = np.cov(means.T, bias=True)
  if dip_type == "ii":
    cov += np.diag(np.exp(2.0 * terms["q_log_scale"].astype(np.float64)).mean(0))
  off = cov - np.diag(np.diag(cov))
  expected = 2.0 * np.sum(off**2) + 5.0 * np.sum((np.diag(cov) - 1.0) ** 2)
  np.testing.assert_allclose(per_example.batch_loss(terms, dataset_size=1400, **traced),
                             expected, rtol=1e-4)


def test_their_strengths_vary_per_replica_and_other_posteriors_are_refused():
  a, b = tiny_config(**{"objective.name": "beta_tcvae", "objective.tc_weight": 2.0}), None
  b = tiny_config(**{"objective.name": "beta_tcvae", "objective.tc_weight": 6.0})
  assert "objective.tc_weight" in build.vectorizable_fields(a)
  build.check_group([a, b])
  factor = [tiny_config(**{"objective.name": "factor_vae", "objective.factor_gamma": g})
            for g in (5.0, 40.0)]
  build.check_group(factor)
  dip = tiny_config(**{"objective.name": "dip_vae"})
  assert {"objective.lambda_od", "objective.lambda_d"} <= set(build.vectorizable_fields(dip))
  dataset = data_lib.load(a.data)
  with pytest.raises(ConfigError, match=r"objective.name='dip_vae' .* needs "
                     r"posterior.name='diagonal_gaussian'"):
    build.build_trainer([tiny_config(**{"objective.name": "dip_vae",
                                         "posterior.name": "iaf"})], dataset)
  with pytest.raises(ConfigError, match=r"objective.dip_type='iii' is not known"):
    build.build_trainer([tiny_config(**{"objective.name": "dip_vae",
                                         "objective.dip_type": "iii"})], dataset)


@pytest.mark.parametrize("variant", ["smoke", "short", "full", "paper"])
def test_the_ablation_trains_each_method_as_one_program(variant):
  ablation = disentanglement.get_config(variant)
  specs = sweep.run_specs(ablation, "/nonexistent")
  ablation_plots.check_options(ablation, specs)
  groups = sweep.plan_groups(specs, ablation.vectorize, ablation.max_replicas)
  assert [{s.config.objective.name for s in g} for g in groups] == [
      {"beta_elbo"}, {"beta_tcvae"}, {"factor_vae"}, {"dip_vae"}]
  assert sum(len(g) for g in groups) == len(specs)
  strengths = {disentangling_plots.method_and_strength(s.cell, ablation.base) for s in specs}
  assert {("dip_vae", 10.0), ("beta_tcvae", 4.0), ("factor_vae", 40.0)} <= strengths


def test_variance_shares_split_a_score_between_method_strength_and_seed():
  # Two methods, two strengths each, two seeds: the method moves the score by 4, the strength by
  # 2, the seed by 1 (each +- half of it around the cell's mean).
  groups = {(m, s): np.array([4.0 * i + 2.0 * j - 0.5, 4.0 * i + 2.0 * j + 0.5])
            for i, m in enumerate("ab") for j, s in enumerate((1.0, 2.0))}
  total = 8 * (4.0 + 1.0 + 0.25)  # sum of squares: 2^2 + 1^2 + 0.5^2 per run
  shares = disentangling_plots.variance_shares(groups)
  np.testing.assert_allclose([shares["method"], shares["cell"], shares["seed"]],
                             [32.0 / total, 40.0 / total, 2.0 / total])


@pytest.mark.slow
def test_the_smoke_ablation_tabulates_and_draws_the_scores(tmp_path):
  out = subprocess.run([sys.executable, "-m", "experiments.ablate",
                        "--config=configs/ablations/disentanglement.py:smoke",
                        f"--workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  table = (tmp_path / "table.md").read_text()
  assert ("| method | MIG | DCI disentanglement | SAP | FactorVAE score | TC(q(z)) | test ELBO | "
          "seeds |") in table
  # beta-TCVAE at tc_weight 1 is the ELBO, as is beta-VAE at beta 1: the same numbers.
  rows = {line.split("|")[1].strip(): line.split("|")[2:] for line in table.splitlines()
          if line.startswith("| beta_")}
  assert rows["beta_vae-1"] == rows["beta_tcvae-1"]
  assert (tmp_path / "disentanglement_vs_strength.png").stat().st_size > 0


def test_the_capacity_vae_pulls_the_kl_towards_a_capacity_that_rises_with_the_epoch(setup):
  _, elbo_terms, _ = _terms(setup, name="elbo")
  _, model, params, x, keys = setup
  per_example = objectives.from_config(model, tiny_config(**{
      "objective.name": "capacity_vae", "objective.capacity_epochs": 4.0}).objective)
  assert per_example.takes_epoch
  recon, kl = elbo_terms["log_px_given_z"], elbo_terms["kl"]
  for epoch, capacity in ((0.0, 0.0), (1.0, 5.0), (4.0, 20.0), (9.0, 20.0), (None, 20.0)):
    terms = jax.vmap(lambda x, k, e=epoch: per_example(params, x, k, epoch=e, capacity_gamma=3.0,
                                                       capacity_max=20.0))(x, keys)
    np.testing.assert_allclose(terms["loss"], -recon + 3.0 * np.abs(kl - capacity), rtol=1e-5)
    np.testing.assert_allclose(terms["elbo"], elbo_terms["elbo"], rtol=1e-6)


@pytest.mark.slow  # two training runs; the loss per epoch is checked in the default suite above
def test_a_capacity_run_holds_the_kl_near_its_capacity(tmp_path):
  kls = []
  for capacity in (0.3, 3.0):  # this model's ELBO alone ends at a KL of about 1.3
    config = tiny_config(**{"objective.name": "capacity_vae", "objective.capacity_max": capacity,
                            "objective.capacity_gamma": 10.0, "objective.capacity_epochs": 1.0,
                            "training.num_epochs": 2})
    kls.append(train.train_and_evaluate(config, str(tmp_path / str(capacity)))["test"]["kl"])
  assert kls[0] < 0.8 and 2.0 < kls[1] < 4.0, kls


@pytest.mark.slow  # three training runs; the step and the group check are in the default suite
def test_factor_vae_replicas_of_one_program_end_as_their_standalone_runs(tmp_path):
  configs = [tiny_config(**{"objective.name": "factor_vae", "objective.critic_hidden": (16,),
                            "objective.factor_gamma": g, "seed": s, "training.num_epochs": 2})
             for g, s in ((5.0, 0), (40.0, 1))]
  grouped = train.train_group(configs, [str(tmp_path / f"group{i}") for i in range(2)])
  alone = train.train_and_evaluate(configs[1], str(tmp_path / "alone"))
  states = [ocp.CheckpointManager(tmp_path / d / "checkpoints") for d in ("group1", "alone")]
  states = [m.restore(m.latest_step(), args=ocp.args.StandardRestore()) for m in states]
  for a, b in zip(jax.tree.leaves(states[0]["critic"]), jax.tree.leaves(states[1]["critic"]),
                  strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for key in ("elbo", "kl", "total_correlation"):
    assert grouped[1]["test"][key] == pytest.approx(alone["test"][key], rel=1e-5, abs=1e-5)
