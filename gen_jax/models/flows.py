"""Normalizing-flow networks built from `bijectors`: RealNVP, Glow, and a
coupling flow for vectors (the 2-D toy densities).

Every flow maps data x to a latent z of the same size with
  forward(x, init=False) -> (z [B, D], log|det dz/dx| [B])
  inverse(z [B, D]) -> (x, log|det dx/dz| [B])
and the family scores log p(x) = log N(z; 0, I) + log|det dz/dx|. `init=True`
runs the data-dependent initialization of actnorm layers on the way.

Multi-scale architecture (Dinh et al. 2017; Kingma & Dhariwal 2018): after
each level but the last, half of the channels are factored out as latents and
the rest go on to the next level at a coarser scale.
  RealNVP level: K checkerboard couplings, squeeze, K channel couplings,
    factor out (last level: K + 1 checkerboard couplings), K =
    steps_per_level (the paper's 3). Each coupling is preceded by actnorm (the
    paper's batch normalization has a batch-dependent Jacobian; actnorm with
    data-dependent init plays its part here).
  Glow level: squeeze, K x [actnorm, invertible 1x1 conv, affine coupling on a
    channel half], factor out with a learned Gaussian prior.
"""

import dataclasses
import itertools
import math

from flax import nnx
import jax
import jax.numpy as jnp

from gen_jax.models import bijectors as bij
from gen_jax.models import layers


@dataclasses.dataclass(frozen=True)
class FlowConfig:
  arch: str  # 'realnvp' | 'glow' | 'coupling_mlp' (vectors)
  data_shape: tuple[int, ...]  # (H, W, C) or (D,)
  num_levels: int = 2  # scales of a multi-scale image flow
  # Glow's K; RealNVP's checkerboard and channel couplings per level (each K,
  # the last level K + 1 checkerboard); coupling_mlp's number of steps.
  steps_per_level: int = 4
  hidden: int = 64  # conditioner width
  num_blocks: int = 1  # residual blocks per conditioner (RealNVP)
  coupling_scale: str = "tanh"  # 'tanh' (RealNVP) | 'sigmoid' (Glow)
  preprocess: str = "logit"  # 'logit' | 'center' | 'none'
  logit_alpha: float = 1e-6

  @property
  def num_squeezes(self) -> int:
    """Halvings of the image side: Glow squeezes at every level, RealNVP
    between levels."""
    return self.num_levels - 1 + (self.arch == "glow")


class ResBlock(nnx.Module):
  """h + conv(relu(conv(relu(h)))), 3x3 convs."""

  def __init__(self, hidden: int, *, rngs: nnx.Rngs):
    self.conv1 = layers.Conv(hidden, hidden, 3, rngs=rngs)
    self.conv2 = layers.Conv(hidden, hidden, 3, rngs=rngs)

  def __call__(self, h):
    return h + self.conv2(jax.nn.relu(self.conv1(jax.nn.relu(h))))


class ConvConditioner(nnx.Module):
  """3x3 conv -> (residual blocks of two 3x3 convs | a 1x1 conv) -> 3x3 conv
  initialized to zero, so a coupling starts as (nearly) the identity.

  `num_blocks=0` is Glow's network (3x3, ReLU, 1x1, ReLU, zero 3x3); more
  blocks make RealNVP's residual network.
  """

  def __init__(self, in_ch: int, hidden: int, out_ch: int, num_blocks: int, *,
               rngs: nnx.Rngs):
    self.inp = layers.Conv(in_ch, hidden, 3, rngs=rngs)
    self.blocks = nnx.List([ResBlock(hidden, rngs=rngs)
                            for _ in range(num_blocks)])
    self.middle = (None if num_blocks else
                   layers.Conv(hidden, hidden, 1, rngs=rngs))
    self.out = layers.Conv(hidden, out_ch, 3, rngs=rngs)
    self.out.kernel[...] = jnp.zeros_like(self.out.kernel[...])

  def __call__(self, x):
    h = self.inp(x)
    for block in self.blocks:
      h = block(h)
    if self.middle is not None:
      h = self.middle(jax.nn.relu(h))
    return self.out(jax.nn.relu(h))


class MLPConditioner(nnx.Module):
  """Dense -> ReLU -> Dense -> ReLU -> Dense (zero-initialized)."""

  def __init__(self, in_dim: int, hidden: int, out_dim: int, *,
               rngs: nnx.Rngs):
    self.l1 = layers.Dense(in_dim, hidden, rngs=rngs)
    self.l2 = layers.Dense(hidden, hidden, rngs=rngs)
    self.out = layers.Dense(hidden, out_dim, rngs=rngs)
    self.out.kernel[...] = jnp.zeros_like(self.out.kernel[...])

  def __call__(self, x):
    return self.out(jax.nn.relu(self.l2(jax.nn.relu(self.l1(x)))))


def _preprocess(cfg: FlowConfig) -> list[bij.Bijector]:
  if cfg.preprocess == "logit":
    return [bij.Logit(cfg.logit_alpha)]
  if cfg.preprocess == "center":
    return [bij.Shift(-0.5)]
  return []


class ImageFlow(nnx.Module):
  """A multi-scale flow over [B, H, W, C] images."""

  def __init__(self, cfg: FlowConfig, *, rngs: nnx.Rngs):
    if cfg.arch not in ("realnvp", "glow"):
      raise ValueError(f"ImageFlow: arch must be realnvp or glow, got "
                       f"'{cfg.arch}'.")
    self.cfg = cfg
    h, w, c = cfg.data_shape
    if h % 2**cfg.num_squeezes or w % 2**cfg.num_squeezes:
      raise ValueError(f"An image of {h}x{w} cannot be squeezed "
                       f"{cfg.num_squeezes} times by 2.")
    self.preprocess = bij.Chain(_preprocess(cfg))
    levels = []
    shapes = []  # (H, W, C) leaving each level, before its factor-out
    for level in range(cfg.num_levels):
      last = level == cfg.num_levels - 1
      build = self._realnvp_level if cfg.arch == "realnvp" else self._glow_level
      chain, (h, w, c) = build((h, w, c), last, rngs)
      levels.append(chain)
      shapes.append((h, w, c))
      if not last:
        c -= c // 2
    self.levels = nnx.List(levels)
    self.shapes = tuple(shapes)

  def _coupling(self, mask, c, rngs):
    c_in, c_out = bij.coupling_io(mask, c)
    net = ConvConditioner(c_in, self.cfg.hidden, c_out, self.cfg.num_blocks,
                          rngs=rngs)
    return bij.AffineCoupling(mask, net, c, scale=self.cfg.coupling_scale)

  def _realnvp_level(self, shape, last, rngs):
    h, w, c = shape
    k = self.cfg.steps_per_level
    steps = []
    for i in range(k + 1 if last else k):
      steps += [bij.ActNorm(c),
                self._coupling(bij.checkerboard_mask((h, w), c, i % 2), c,
                               rngs)]
    if not last:
      steps.append(bij.Squeeze())
      h, w, c = h // 2, w // 2, 4 * c
      for i in range(k):
        steps += [bij.ActNorm(c),
                  self._coupling(bij.channel_mask(c, i % 2), c, rngs)]
    return bij.Chain(steps), (h, w, c)

  def _glow_level(self, shape, last, rngs):
    h, w, c = shape
    h, w, c = h // 2, w // 2, 4 * c
    steps = [bij.Squeeze()]
    for _ in range(self.cfg.steps_per_level):
      steps += [bij.ActNorm(c), bij.Invertible1x1Conv(c, rngs=rngs),
                self._coupling(bij.channel_mask(c, 0), c, rngs)]
    if not last:  # learned prior of the half that is factored out
      keep = c - c // 2
      net = ConvConditioner(keep, self.cfg.hidden, 2 * (c // 2), 0, rngs=rngs)
      steps.append(bij.GaussianSplitPrior(net, c))
    return bij.Chain(steps), (h, w, c)

  @property
  def num_dims(self) -> int:
    return math.prod(self.cfg.data_shape)

  def forward(self, x, init: bool = False):
    b = x.shape[0]
    x, logdet = self.preprocess.forward(x)
    latents = []
    for i, level in enumerate(self.levels):
      x, ld = level.forward(x, init=init)
      logdet = logdet + ld
      if i < len(self.levels) - 1:
        keep = x.shape[-1] - x.shape[-1] // 2
        latents.append(x[..., keep:].reshape(b, -1))
        x = x[..., :keep]
    latents.append(x.reshape(b, -1))
    return jnp.concatenate(latents, axis=-1), logdet

  def inverse(self, z):
    b = z.shape[0]
    sizes = []
    for i, (h, w, c) in enumerate(self.shapes):
      factored = c // 2 if i < len(self.shapes) - 1 else c
      sizes.append(h * w * factored)
    pieces = jnp.split(z, list(itertools.accumulate(sizes))[:-1], axis=-1)
    h, w, c = self.shapes[-1]
    x = pieces[-1].reshape(b, h, w, c)
    logdet = jnp.zeros((b,))
    for i in reversed(range(len(self.levels))):
      if i < len(self.levels) - 1:
        h, w, c = self.shapes[i]
        x = jnp.concatenate(
            [x, pieces[i].reshape(b, h, w, c // 2)], axis=-1)
      x, ld = self.levels[i].inverse(x)
      logdet = logdet + ld
    x, ld = self.preprocess.inverse(x)
    return x, logdet + ld


class VectorFlow(nnx.Module):
  """K x [actnorm, invertible linear map, affine coupling with an MLP] over
  [B, D] vectors (the 1x1 conv of Glow is a D x D matrix here)."""

  def __init__(self, cfg: FlowConfig, *, rngs: nnx.Rngs):
    (d,) = cfg.data_shape
    steps = []
    for i in range(cfg.steps_per_level):
      mask = bij.checkerboard_mask((), d, i % 2)
      d_in, d_out = bij.coupling_io(mask, d)
      net = MLPConditioner(d_in, cfg.hidden, d_out, rngs=rngs)
      steps += [bij.ActNorm(d), bij.Invertible1x1Conv(d, rngs=rngs),
                bij.AffineCoupling(mask, net, d, scale=cfg.coupling_scale)]
    self.chain = bij.Chain(steps)
    self.cfg = cfg

  @property
  def num_dims(self) -> int:
    return self.cfg.data_shape[0]

  def forward(self, x, init: bool = False):
    return self.chain.forward(x, init=init)

  def inverse(self, z):
    return self.chain.inverse(z)


def build(cfg: FlowConfig, rngs: nnx.Rngs) -> nnx.Module:
  if cfg.arch == "coupling_mlp":
    return VectorFlow(cfg, rngs=rngs)
  return ImageFlow(cfg, rngs=rngs)
