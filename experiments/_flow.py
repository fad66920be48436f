"""Config builders shared by the flow experiments (not an experiment).

Experiment files load this with `config_lib.load_module("_flow")`.
"""

import ml_collections


def model_defaults() -> ml_collections.ConfigDict:
  """`config.model` of the flow family, with every key it reads."""
  m = ml_collections.ConfigDict()
  m.arch = "glow"  # 'realnvp' | 'glow' | 'coupling_mlp' (2-D vectors)
  m.num_levels = 2  # scales of a multi-scale image flow
  # Glow: K flow steps per level; RealNVP: K checkerboard and K channel
  # couplings per level (K + 1 checkerboard at the last); coupling_mlp: all.
  m.steps_per_level = 4
  m.hidden = 64  # width of the coupling networks
  m.num_blocks = 0  # residual blocks per coupling network (RealNVP)
  m.coupling_scale = "sigmoid"  # 'tanh' (RealNVP) | 'sigmoid' (Glow)
  m.preprocess = "center"  # 'logit' | 'center' | 'none'
  m.logit_alpha = 1e-6
  return m
