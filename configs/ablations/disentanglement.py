r"""Disentangling objectives against their strength, over seeds (Higgins et al. 2017; Chen et al.
2018; Kumar et al. 2018; Locatello et al. 2019).

beta-VAE (the beta-ELBO), beta-TCVAE (tc_weight on the total correlation), FactorVAE
(factor_gamma on a discriminator's TC estimate) and DIP-VAE-I (lambda_od, with lambda_d =
10 lambda_od as the paper) on procedural dSprites-like images with known factors
(`elbo_jax.data.sprites`). Each method's cells differ only in traced scalars and the seed, so
each method trains as ONE vectorised program. Every run reports MIG, SAP, modularity, DCI and the
KL term taken apart; the figure draws each score against the strength with every seed's dot and
the share of its variance that the method, the cell and the seed explain (Locatello et al.'s
finding: the seed matters about as much as the method).

  python -m experiments.ablate --config=configs/ablations/disentanglement.py:short \
      --workdir=runs/disentanglement

Variants: `smoke` (16 x 16 sprites, seconds per program; the tests), `short` (32 x 32 sprites,
20,000 images, a 512-512 MLP with 10 latents, 8 epochs, 3 seeds, a 3 x 256 discriminator at the
VAE's learning rate: CPU scale; docs/ablations.md), `full` (the default): `configs/sprites_vae.py`'s
1200-1200 MLP, 40,000 images, 20 epochs, 5 seeds, the paper's 6 x 1000 discriminator.
`paper`: Locatello et al. 2019's protocol and strengths on TFDS dSprites (`configs/dsprites_vae.py`:
64 x 64, their conv networks, 300k steps; 5 seeds where they ran 50); it needs a GPU, prepared TFDS
data and ~12 GB of memory, and has not been run here.
"""

from configs import dsprites_vae, sprites_vae
from elbo_jax import sweep

STRENGTHS = (1.0, 2.0, 4.0, 8.0, 16.0)
FACTOR_GAMMAS = (5.0, 10.0, 20.0, 40.0, 100.0)  # Kim & Mnih's gamma; Locatello et al.: 10-100
DIP_STRENGTHS = (1.0, 2.0, 5.0, 10.0, 20.0)


def methods(betas, tc_weights, factor_gammas, dip_strengths, critic_hidden=(1000,) * 6,
            critic_learning_rate=1e-4) -> tuple:
  """The method-and-strength axis: beta-VAE, beta-TCVAE, FactorVAE (its discriminator's widths
  and learning rate given) and DIP-VAE-I cells."""
  critic = {"objective.critic_hidden": critic_hidden,
            "objective.critic_learning_rate": critic_learning_rate}
  cells = [(f"beta_vae-{s:g}", {"objective.name": "beta_elbo", "objective.beta": s})
           for s in betas]
  cells += [(f"beta_tcvae-{s:g}", {"objective.name": "beta_tcvae", "objective.tc_weight": s})
            for s in tc_weights]
  cells += [(f"factor_vae-{g:g}", {"objective.name": "factor_vae", "objective.factor_gamma": g,
                                   **critic}) for g in factor_gammas]
  cells += [(f"dip_vae_i-{s:g}", {"objective.name": "dip_vae", "objective.lambda_od": s,
                                  "objective.lambda_d": 10.0 * s}) for s in dip_strengths]
  return sweep.axis("method", cells)


def get_config(arg=None):
  c = sweep.default_config()
  c.name = "disentanglement"
  c.description = ("beta-VAE, beta-TCVAE, FactorVAE and DIP-VAE-I on sprites with known "
                   "factors: disentanglement scores against each method's strength, over seeds.")
  c.metrics = ("mig", "dci_disentanglement", "sap", "factor_vae", "total_correlation", "elbo")
  c.figures = ("disentanglement_vs_strength", "metric_bars")
  c.vectorize = "auto"
  if arg == "smoke":
    c.base_config = "configs/sprites_vae.py:smoke"
    c.base = sprites_vae.get_config("smoke")
    c.axes = (methods((1.0, 4.0), (1.0, 4.0), (5.0, 40.0), (1.0, 10.0), (32, 32), 1e-3),)
    c.seeds = (0, 1)
  elif arg in ("short", "full", None):
    c.base_config = "configs/sprites_vae.py"
    c.base = sprites_vae.get_config()
    c.axes = (methods(STRENGTHS, STRENGTHS, FACTOR_GAMMAS, DIP_STRENGTHS),)
    c.seeds = (0, 1, 2, 3, 4)
    if arg == "short":
      c.axes = (methods(STRENGTHS, STRENGTHS, FACTOR_GAMMAS, DIP_STRENGTHS, (256, 256, 256),
                        1e-3),)
      with c.base.unlocked():
        c.base.data.num_examples = 20000
        c.base.model.hidden = (512, 512)
        c.base.training.num_epochs = 8
        c.base.eval.num_samples = 500
        c.base.eval.num_test = 500
      c.seeds = (0, 1, 2)
  elif arg == "paper":
    # Locatello et al. 2019 (unsupervised_study_v1): each method's six strengths, on dSprites.
    c.base_config = "configs/dsprites_vae.py"
    c.base = dsprites_vae.get_config()
    c.axes = (methods((1.0, 2.0, 4.0, 6.0, 8.0, 16.0), (1.0, 2.0, 4.0, 6.0, 8.0, 10.0),
                      (10.0, 20.0, 30.0, 40.0, 50.0, 100.0), (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)),)
    c.seeds = (0, 1, 2, 3, 4)
  else:
    raise sweep.variant_error("configs/ablations/disentanglement.py", arg,
                              ("smoke", "short", "full", "paper"))
  return c
