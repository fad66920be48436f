"""Generative families, chosen by `config.family` from a registry."""

from typing import Callable

import ml_collections

from gen_jax.errors import UserError
from gen_jax.families.base import Family

_REGISTRY: dict[str, Callable[[ml_collections.ConfigDict], Family]] = {}


def register(name: str):
  """Class decorator: makes a family available as `config.family = name`."""
  def wrap(cls):
    _REGISTRY[name] = cls
    return cls
  return wrap


def build(config: ml_collections.ConfigDict, tokenizer=None) -> Family:
  """The family `config.family` names; `tokenizer`: the data pipeline's
  (`Data.tokenizer`), for families over tokens."""
  _import_all()
  if config.family not in _REGISTRY:
    raise UserError(f"--config.family: unknown family '{config.family}'. "
                    f"Valid: {', '.join(sorted(_REGISTRY))}.")
  return _REGISTRY[config.family](config, tokenizer=tokenizer)


def _import_all() -> None:
  # Importing a family module registers it.
  from gen_jax.families import autoregressive  # pylint: disable=g-import-not-at-top,unused-import
  from gen_jax.families import classifier  # pylint: disable=g-import-not-at-top,unused-import
  from gen_jax.families import edm  # pylint: disable=g-import-not-at-top,unused-import
  from gen_jax.families import flow_matching  # pylint: disable=g-import-not-at-top,unused-import
  from gen_jax.families import diffusion  # pylint: disable=g-import-not-at-top,unused-import
  from gen_jax.families import pixelcnn  # pylint: disable=g-import-not-at-top,unused-import
  from gen_jax.families import seq2seq  # pylint: disable=g-import-not-at-top,unused-import
  from gen_jax.families import flow  # pylint: disable=g-import-not-at-top,unused-import
  from gen_jax.families import gan  # pylint: disable=g-import-not-at-top,unused-import
  from gen_jax.families import vae  # pylint: disable=g-import-not-at-top,unused-import
  from gen_jax.families import vq_prior  # pylint: disable=g-import-not-at-top,unused-import
  from gen_jax.families import vqvae  # pylint: disable=g-import-not-at-top,unused-import
