"""An ablation's figures, chosen by name in its config (`figures = ("rate_distortion",)`) and
drawn by `sweep.write_outputs` into the ablation's workdir. One module per kind, each registering
into the one FIGURES registry (`base` says what an entry is):

  bars           metric_bars (every tabulated metric per cell), rate_distortion (Alemi et al. 2018)
  curves         elbo_vs_examples (Kingma & Welling 2013, Figure 2)
  disentangling  disentanglement_vs_strength (Chen et al. 2018; Locatello et al. 2019)
  images         prior_samples (with the VampPrior's pseudo-inputs), samples_and_reconstructions,
                 latent_manifold
  gradient_snr   gradient_snr (Rainforth et al. 2018; Tucker et al. 2019)
and the ANALYSES of ablations that train nothing:
  toy_snr        gaussian_toy_snr (Rainforth et al. 2018's Gaussian toy, `elbo_jax.gaussian_toy`)
"""

from elbo_jax.ablation_plots import bars, curves, disentangling, gradient_snr, images, toy_snr
from elbo_jax.ablation_plots.base import ANALYSES, FIGURES, check_options

__all__ = ["ANALYSES", "FIGURES", "bars", "check_options", "curves", "disentangling",
           "gradient_snr", "images", "toy_snr"]
