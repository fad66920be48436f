"""Config builders shared by the flow-matching and EDM experiments (not an
experiment). Experiment files load this with
`config_lib.load_module("_continuous")`.

The MNIST experiments share ddpm_mnist's U-Net, batch, optimizer, EMA and
number of steps, so the objectives compare at equal compute.
"""

from gen_jax import config as config_lib

_ddpm_mnist = config_lib.load_module("ddpm_mnist")
_dit = config_lib.load_module("_dit")


def mnist(family: str):
  """`family` on MNIST with ddpm_mnist's network and training settings."""
  c = _ddpm_mnist.get_config()
  c.family = family
  for key in ("schedule", "num_timesteps", "beta_start", "beta_end",
              "prediction", "variance"):
    del c.model[key]
  for key in ("eta", "clip_denoised"):
    del c.sample[key]
  for key in ("vlb_timesteps", "periodic_vlb_timesteps"):
    del c.eval[key]
  c.model.network = "unet"
  ode_eval(c)
  return c


def sampling(c, sampler: str, num_steps: int):
  c.sample.sampler = sampler  # euler|heun|stochastic|dpm_solver++|adaptive
  c.sample.num_steps = num_steps  # 0: the family's default
  c.sample.guidance_scale = 1.0  # classifier-free guidance (conditional)
  c.sample.steps_per_call = 25  # steps per compiled call (progress)
  c.sample.tolerance = 1e-4  # 'adaptive': rtol = atol
  c.sample.max_steps = 1000  # 'adaptive': refuse to run longer
  return c


def edm_settings(c):
  """EDM's noise levels and sampler constants (Karras et al. 2022)."""
  c.model.sigma_data = 0.5
  c.model.sigma_min = 0.002
  c.model.sigma_max = 80.0
  c.model.p_mean = -1.2  # ln sigma ~ N(p_mean, p_std^2) in training
  c.model.p_std = 1.2
  sampling(c, "heun", 18)  # 35 network evaluations
  c.sample.rho = 7.0  # Karras' spacing of the sigmas
  # 'stochastic' only: Algorithm 2's S_churn, S_tmin, S_tmax, S_noise.
  c.sample.churn = 0.0
  c.sample.churn_tmin = 0.05
  c.sample.churn_tmax = 50.0
  c.sample.s_noise = 1.003
  return c


def fm_settings(c):
  c.model.time_sampling = "uniform"  # 'uniform' | 'logit_normal' (SD3)
  c.model.logit_mean = 0.0
  c.model.logit_std = 1.0
  # Reflow: the workdir of a trained flow-matching run of the same network
  # ('' = ordinary training); its pairs are drawn with this sampler.
  c.model.reflow_from = ""
  c.model.reflow_sampler = "heun"  # euler | heun | dpm_solver++ | adaptive
  c.model.reflow_steps = 10
  c.model.reflow_tolerance = 1e-4  # 'adaptive' only
  sampling(c, "euler", 50)
  return c


def ode_eval(c):
  """Exact bits/dim by the probability-flow ODE in the final eval."""
  c.eval.ode_rows = 32  # rows of each eval batch; 0 turns it off
  c.eval.ode_trace = "auto"  # 'auto' (exact for <= 16 dims) | 'exact' |
  # 'hutchinson'
  c.eval.ode_probes = 1  # Hutchinson's Rademacher probes per example
  c.eval.ode_tolerance = 1e-5  # rtol = atol of the solve
  return c


def smoke(c):
  if c.model.network == "dit":
    _dit.smoke(c)
  else:
    c.model.channels = 8
    c.model.num_groups = 4
    c.model.num_res_blocks = 1
  c.sample.num_steps = 3
  c.sample.tolerance = 1e-2
  c.eval.ode_rows = 2
  c.eval.ode_tolerance = 1e-2
  c.eval.quality_samples = 0
  return c


def cifar10(family: str, channel_mults, num_res_blocks: int, dropout: float):
  """`family` on CIFAR-10 (random flips) with a DDPM++-sized U-Net: 128
  channels, attention at 16x16."""
  c = mnist(family)
  c.data.name = "cifar10"
  c.data.image_shape = (32, 32, 3)
  c.data.random_flip = True
  c.model.patch_size = 1
  c.model.channels = 128
  c.model.channel_mults = tuple(channel_mults)
  c.model.num_res_blocks = num_res_blocks
  c.model.attention_resolutions = (16,)
  c.model.dropout = dropout
  c.model.num_groups = 32
  c.train.log_every = 1000
  c.train.eval_every = 50_000
  c.train.ckpt_every = 10_000
  c.train.sample_every = 50_000
  c.eval.quality_samples = 50_000
  c.eval.quality_features = "inception_v3"
  return c


def cifar10_smoke(c):
  if c.model.network == "unet":
    c.model.channels = 16
    c.model.channel_mults = (1, 2)
    c.model.num_groups = 8
  smoke(c)
  if c.model.network == "unet":
    c.model.num_res_blocks = 1
  else:
    c.model.patch_size = 8
  return c
