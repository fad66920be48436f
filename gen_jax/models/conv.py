"""The one 2-D convolution every network uses (NHWC inputs, HWIO kernels).

Every form computes `jax.lax.conv_general_dilated`'s function; which form
runs is chosen per layer shape by an implementation:

  * 'xla': XLA's convolution and XLA's gradients everywhere. What GPU and
    TPU want: the compiler maps convolutions onto its tuned kernels.
  * 'auto' (the default): 'xla' on GPU and TPU; on CPU, an ungrouped 1x1
    convolution is a plain matrix product (forward and both gradients;
    XLA:CPU's kernel gradient of a 1x1 convolution is 1.3-3x slower than the
    product), and larger kernels are XLA's.
  * 'matmul', on every backend: 1x1 convolutions as matrix products, and a
    larger kernel's gradient as one matrix product of the input's shifted
    copies (im2col) with the output gradient, through a custom VJP (reverse
    mode only: `jax.jvp` of it fails). Older XLA:CPU versions computed
    the kernel gradient 10-15x slower than the forward pass and this form
    won; the XLA:CPU of the pinned JAX differentiates 3x3 kernels as fast as
    it runs them, and this form is 1.5-3x slower there
    (docs/architecture.md has the measurements).

`set_impl` sets the process-wide choice (the trainer calls it with
`config.train.conv` and logs what it chose); a layer may pin its own with
`impl=`. The choice is read when a function is traced: set it before
compiling.
"""

import functools
import math
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from gen_jax.models import initializers

IMPLS = ("auto", "xla", "matmul")
_DIMS = ("NHWC", "HWIO", "NHWC")
_impl = "auto"

Padding = str | Sequence[tuple[int, int]]


def resolve(impl: str | None = None) -> str:
  """'xla' or 'matmul': `impl` (default: the process-wide setting), with
  'auto' decided by the default backend."""
  impl = _impl if impl is None else impl
  if impl not in IMPLS:
    raise ValueError(f"convolution '{impl}' is not one of {', '.join(IMPLS)}.")
  if impl == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "xla"
  return impl


def set_impl(impl: str) -> str:
  """Sets the process-wide implementation; returns what it resolves to."""
  global _impl
  resolved = resolve(impl)
  _impl = impl
  return resolved


def describe(impl: str | None = None) -> str:
  """One line on how convolutions are computed, for the log."""
  impl = _impl if impl is None else impl
  backend = jax.default_backend()
  if resolve(impl) == "xla":
    return f"XLA's ({impl!r} on {backend})"
  larger = ("with an im2col kernel gradient" if impl == "matmul"
            else "XLA's")
  return f"1x1 as matmuls, larger kernels {larger} ({impl!r} on {backend})"


def _check_padding(padding: Padding) -> None:
  if isinstance(padding, str) and padding not in ("SAME", "VALID"):
    raise ValueError(f"padding '{padding}' is not one of SAME, VALID or "
                     "((top, bottom), (left, right)).")


def _explicit_padding(padding: Padding, in_hw, kernel_hw, strides,
                      dilation) -> tuple[tuple[int, int], ...]:
  _check_padding(padding)
  if isinstance(padding, str):
    dilated = [(k - 1) * d + 1 for k, d in zip(kernel_hw, dilation)]
    return tuple(jax.lax.padtype_to_pads(in_hw, dilated, strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _lax_conv(x, kernel, strides, pads, dilation, groups):
  return jax.lax.conv_general_dilated(
      x, kernel, strides, pads, rhs_dilation=dilation,
      dimension_numbers=_DIMS, feature_group_count=groups)


def _taps(x_BHWI, kernel_hw, strides, pads, dilation, out_hw):
  """im2col: [B, Ho, Wo, kh * kw, I], the input each kernel tap reads."""
  x = jnp.pad(x_BHWI, ((0, 0), *pads, (0, 0)))
  cols = []
  for a in range(kernel_hw[0]):
    for b in range(kernel_hw[1]):
      y0, x0 = a * dilation[0], b * dilation[1]
      cols.append(jax.lax.slice(
          x, (0, y0, x0, 0),
          (x.shape[0], y0 + (out_hw[0] - 1) * strides[0] + 1,
           x0 + (out_hw[1] - 1) * strides[1] + 1, x.shape[3]),
          (1, strides[0], strides[1], 1)))
  return jnp.stack(cols, axis=3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_im2col_grad(x, kernel, strides, pads, dilation, groups):
  return _lax_conv(x, kernel, strides, pads, dilation, groups)


def _fwd(x, kernel, strides, pads, dilation, groups):
  return _lax_conv(x, kernel, strides, pads, dilation, groups), (x, kernel)


def _bwd(strides, pads, dilation, groups, residuals, g_BHWO):
  x, kernel = residuals
  _, input_vjp = jax.vjp(
      lambda x: _lax_conv(x, kernel, strides, pads, dilation, groups), x)
  dx, = input_vjp(g_BHWO)
  kh, kw, ig, o = kernel.shape
  cols = _taps(x, (kh, kw), strides, pads, dilation, g_BHWO.shape[1:3])
  n = math.prod(g_BHWO.shape[:3])
  cols = cols.reshape(n, kh * kw, groups, ig)
  g = g_BHWO.reshape(n, groups, o // groups)
  dk = jnp.einsum("ntgi,ngo->tigo", cols, g,
                  preferred_element_type=jnp.float32)
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


_conv_im2col_grad.defvjp(_fwd, _bwd)


def conv2d(x_BHWI: jax.Array, kernel_HWIO: jax.Array,
           strides: Sequence[int] = (1, 1), padding: Padding = "SAME",
           dilation: Sequence[int] = (1, 1), groups: int = 1,
           impl: str | None = None) -> jax.Array:
  """y[b, i, j, o] = sum over taps of x at (i * s + a * d - pad) times the
  kernel, like `jax.lax.conv_general_dilated` with NHWC/HWIO/NHWC.

  Args:
    x_BHWI: input [B, H, W, I].
    kernel_HWIO: [kh, kw, I / groups, O].
    strides, dilation: per spatial axis (dilation of the kernel).
    padding: 'SAME', 'VALID' or ((lo, hi), (lo, hi)).
    groups: feature groups (I and O both divisible by it).
    impl: 'xla', 'matmul', 'auto' or None (the process-wide setting).
  """
  strides, dilation = tuple(strides), tuple(dilation)
  kh, kw = kernel_HWIO.shape[:2]
  pads = _explicit_padding(padding, x_BHWI.shape[1:3], (kh, kw), strides,
                           dilation)
  form = _form(impl, (kh, kw), groups, pads)
  if form == "matmul":
    x = jnp.pad(x_BHWI, ((0, 0), *pads, (0, 0)))
    return x[:, ::strides[0], ::strides[1]] @ kernel_HWIO[0, 0]
  if form == "im2col_grad":
    return _conv_im2col_grad(x_BHWI, kernel_HWIO, strides, pads, dilation,
                             groups)
  return _lax_conv(x_BHWI, kernel_HWIO, strides, pads, dilation, groups)


def _form(impl, kernel_hw, groups, pads) -> str:
  """How one convolution is computed: 'lax', 'matmul' or 'im2col_grad'
  (negative padding, a crop, is left to XLA)."""
  impl = _impl if impl is None else impl
  resolved = resolve(impl)
  if resolved == "xla" or min(min(p) for p in pads) < 0:
    return "lax"
  if kernel_hw == (1, 1) and groups == 1:
    return "matmul"
  return "im2col_grad" if impl == "matmul" else "lax"


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class Conv(nnx.Module):
  """A convolution layer: `conv2d` plus a bias, computing in `dtype`
  (parameters stay float32). Parameters `kernel` [kh, kw, I / groups, O]
  and `bias` [O], as `nnx.Conv` names them."""

  def __init__(self, in_features: int, out_features: int,
               kernel_size: int | Sequence[int] = 3, strides=1,
               padding: Padding = "SAME", dilation=1, groups: int = 1, *,
               use_bias: bool = True, dtype="float32",
               kernel_init=initializers.conv_kernel_init,
               impl: str | None = None, rngs: nnx.Rngs):
    if in_features % groups or out_features % groups:
      raise ValueError(f"groups={groups} must divide the {in_features} input "
                       f"and {out_features} output features.")
    self.strides, self.dilation = _pair(strides), _pair(dilation)
    _check_padding(padding)
    self.padding = padding if isinstance(padding, str) else tuple(
        (int(lo), int(hi)) for lo, hi in padding)
    self.groups, self.impl = groups, impl
    self.dtype = jnp.dtype(dtype)
    shape = (*_pair(kernel_size), in_features // groups, out_features)
    self.kernel = nnx.Param(kernel_init(rngs.params(), shape))
    # A key drawn for the bias too, as nnx.Conv does: the same stream, so the
    # same initial weights as networks built from nnx.Conv.
    self.bias = (nnx.Param(nnx.initializers.zeros(rngs.params(),
                                                  (out_features,)))
                 if use_bias else None)

  def __call__(self, x_BHWI: jax.Array) -> jax.Array:
    y = conv2d(x_BHWI.astype(self.dtype), self.kernel[...].astype(self.dtype),
               self.strides, self.padding, self.dilation, self.groups,
               self.impl)
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype).reshape(1, 1, 1, -1)
    return y
