"""The first stage of a two-stage model: a trained VQ-VAE, loaded read-only.

A second-stage family (the token prior `vq_prior`, or flow matching / EDM
over latents) names the stage-1 run in `config.autoencoder.workdir`. Its
network becomes a `TwoStage` module: the model being trained (`main`) and
the autoencoder, whose weights enter the state at step 0 (`warm_start`)
from the stage-1 checkpoint and are never trained (they sit in the state's
`rest`, so checkpoints hold them and a run resumes and samples without the
stage-1 workdir). A missing or mismatched stage-1 run is a one-line error
that says which experiment to train first (`config.autoencoder.exp`).
"""

import json
import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from gen_jax import checkpointing
from gen_jax.errors import UserError
from gen_jax.families import vqvae
from gen_jax.models import vqvae as vqvae_lib

# What the optimizer of a two-stage family updates: the main model only.
TRAINABLE = nnx.All(nnx.Param, nnx.PathContains("main"))


class Frozen(nnx.Variable):
  """A constant of a two-stage model measured at step 0 (e.g. the latents'
  standard deviation); state, never trained."""


class TwoStage(nnx.Module):
  """The model being trained and the frozen autoencoder; calls go to the
  model."""

  def __init__(self, main: nnx.Module, autoencoder: vqvae_lib.VQVAE):
    self.main = main
    self.autoencoder = autoencoder
    self.latent_std = Frozen(jnp.ones(()))

  def __call__(self, *args, **kwargs):
    return self.main(*args, **kwargs)


class Stage1:
  """The stage-1 run named by `config.autoencoder`: its network config,
  checked against the second stage's data."""

  def __init__(self, config: ml_collections.ConfigDict):
    a = config.autoencoder
    self.workdir = a.workdir
    how = (f"train it first: python -m gen_jax.main --exp={a.exp} "
           f"--workdir={a.workdir or 'DIR'}")
    if not a.workdir:
      raise UserError("--config.autoencoder.workdir is empty: name a trained "
                      f"VQ-VAE run; {how}.")
    path = pathlib.Path(a.workdir) / "config.json"
    if not path.is_file():
      raise UserError(f"--config.autoencoder.workdir={a.workdir}: no trained "
                      f"run there (no config.json); {how}.")
    saved = ml_collections.ConfigDict(json.loads(path.read_text()))
    if saved.get("family") != "vqvae":
      raise UserError(f"--config.autoencoder.workdir={a.workdir} holds a "
                      f"'{saved.get('family')}' run, not a VQ-VAE; {how}.")
    ours = tuple(config.data.image_shape)
    theirs = tuple(saved.data.image_shape)
    if ours != theirs or saved.data.name != config.data.name:
      raise UserError(f"--config.autoencoder.workdir={a.workdir} was trained "
                      f"on {saved.data.name} {theirs}, this run reads "
                      f"{config.data.name} {ours}; {how}.")
    self.how = how
    self.model_cfg = vqvae.model_config(saved)

  @property
  def latent_shape(self) -> tuple[int, int, int]:
    return self.model_cfg.latent_shape

  def build(self, main: nnx.Module, rngs: nnx.Rngs) -> TwoStage:
    return TwoStage(main, vqvae_lib.VQVAE(self.model_cfg, rngs=rngs))

  def load(self, model: TwoStage) -> None:
    """Puts the stage-1 checkpoint's weights (its EMA when kept) and
    codebook into `model.autoencoder`, in place."""
    try:
      saved = checkpointing.load_state(self.workdir)
    except UserError as e:
      raise UserError(f"--config.autoencoder.workdir={self.workdir}: no "
                      f"checkpoint there; {self.how}.") from e
    which = "ema_params" if saved.get("ema_params") else "params"
    _, params, rest = nnx.split(model.autoencoder, nnx.Param, ...)
    try:
      nnx.update(model.autoencoder,
                 checkpointing.restore_into(params, saved[which]),
                 checkpointing.restore_into(rest, saved["rest"]))
    except (KeyError, IndexError, TypeError) as e:
      raise UserError(f"The checkpoint in {self.workdir} does not match its "
                      f"config.json ({e!r}); {self.how}.") from e


def warm_start(family, state, measure=None):
  """Step 0 of a two-stage family: the stage-1 weights loaded into the
  state, then `measure(model)` (in place, e.g. the latents' scale)."""
  model = family.host_network(state)
  family.stage1.load(model)
  if measure is not None:
    measure(model)
  return family.with_network(state, model)


def encode_latents(model: TwoStage, image_BHWC: jax.Array) -> jax.Array:
  """Images -> the autoencoder's continuous latents before quantization,
  divided by their step-0 standard deviation (no gradient)."""
  z = model.autoencoder.encoder(vqvae.to_model_space(image_BHWC))
  return jax.lax.stop_gradient(z / model.latent_std[...])


def decode_latents(model: TwoStage, z_BHWD: jax.Array) -> jax.Array:
  """Scaled latents -> images in [0, 1] (through the quantizer)."""
  x = model.autoencoder.decode_latents(z_BHWD * model.latent_std[...])
  return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)
