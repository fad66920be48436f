"""The shared convolution: every implementation computes XLA's convolution
and its gradients, for strides, padding, dilation, groups and 1x1 kernels."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.models import conv

CASES = {  # kernel (kh, kw), strides, padding, dilation, groups
    "3x3": ((3, 3), (1, 1), "SAME", (1, 1), 1),
    "3x3 stride 2": ((3, 3), (2, 2), "SAME", (1, 1), 1),
    "4x4 stride 2": ((4, 4), (2, 2), "SAME", (1, 1), 1),
    "3x2 valid, strided and dilated": ((3, 2), (2, 2), "VALID", (2, 1), 1),
    "explicit padding, groups": ((3, 3), (1, 1), ((2, 0), (1, 1)), (1, 1), 2),
    "1x1": ((1, 1), (1, 1), "SAME", (1, 1), 1),
    "1x1 strides (2, 1) padded": ((1, 1), (2, 1), ((1, 0), (0, 1)), (1, 1), 1),
    "1x1 groups": ((1, 1), (1, 1), "VALID", (1, 1), 4),
}


def _reference(x, kernel, strides, padding, dilation, groups):
  return jax.lax.conv_general_dilated(
      x, kernel, strides, padding, rhs_dilation=dilation,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


@pytest.mark.parametrize("case", list(CASES))
def test_values_and_gradients_equal_xlas(case):
  """'matmul': 1x1 kernels as matmuls, larger ones with the im2col kernel
  gradient ('auto' on CPU uses the first form and XLA's for the second)."""
  kernel_hw, strides, padding, dilation, groups = CASES[case]
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (2, 9, 8, 4))
  kernel = jax.random.normal(kk, (*kernel_hw, 4 // groups, 8))
  args = (strides, padding, dilation, groups)
  want, want_vjp = jax.vjp(lambda x, k: _reference(x, k, *args), x, kernel)
  got, got_vjp = jax.vjp(
      lambda x, k: conv.conv2d(x, k, *args, impl="matmul"), x, kernel)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  cotangent = jax.random.normal(kg, want.shape)
  for g, w in zip(got_vjp(cotangent), want_vjp(cotangent)):  # dx, dkernel
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


def _primitives(impl, kernel_hw):
  x, kernel = jnp.ones((1, 6, 6, 2)), jnp.ones((*kernel_hw, 2, 3))
  loss = lambda k: jnp.sum(conv.conv2d(x, k, impl=impl))
  return str(jax.make_jaxpr(jax.grad(loss))(kernel))


on_cpu = pytest.mark.skipif(jax.default_backend() != "cpu",
                            reason="'auto' chooses by backend")


@on_cpu
def test_each_implementation_uses_its_forms():
  assert "conv_general_dilated" not in _primitives("matmul", (1, 1))
  assert "conv_general_dilated" in _primitives("xla", (1, 1))
  # The im2col kernel gradient: one matmul instead of XLA's convolution.
  assert "dot_general" in _primitives("matmul", (3, 3))
  assert "dot_general" not in _primitives("xla", (3, 3))
  # 'auto' on CPU: 1x1 as matmuls, larger kernels XLA's own gradients.
  assert "conv_general_dilated" not in _primitives("auto", (1, 1))
  assert "dot_general" not in _primitives("auto", (3, 3))


@on_cpu
def test_the_process_wide_choice_reaches_layers():
  layer = conv.Conv(2, 3, 1, rngs=nnx.Rngs(0))
  x = jnp.ones((1, 4, 4, 2))
  jaxpr = lambda: str(jax.make_jaxpr(lambda x: layer(x))(x))  # traced anew
  try:
    assert conv.set_impl("xla") == "xla"
    assert "conv_general_dilated" in jaxpr()
    assert conv.set_impl("auto") == "matmul"  # the tests run on CPU
    assert "conv_general_dilated" not in jaxpr()
    assert "1x1 as matmuls" in conv.describe()
  finally:
    conv.set_impl("auto")
  with pytest.raises(ValueError, match="'fast' is not one of auto, xla"):
    conv.set_impl("fast")


def test_layer_bias_dtype_and_groups():
  layer = conv.Conv(4, 6, (3, 3), strides=2, groups=2, dtype="bfloat16",
                    rngs=nnx.Rngs(1))
  layer.bias[...] = jnp.arange(6.0)
  x = jax.random.normal(jax.random.key(2), (2, 7, 7, 4))
  y = layer(x)
  assert y.dtype == jnp.bfloat16 and y.shape == (2, 4, 4, 6)
  want = _reference(x, layer.kernel[...], (2, 2), "SAME", (1, 1), 2)
  bias = jnp.arange(6.0).reshape(1, 1, 1, 6)
  np.testing.assert_allclose(np.float32(y), want + bias, rtol=2e-2, atol=5e-2)
  with pytest.raises(ValueError, match="groups=3 must divide"):
    conv.Conv(4, 6, 3, groups=3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="padding 'CIRCULAR' is not one of"):
    conv.Conv(4, 6, 3, padding="CIRCULAR", rngs=nnx.Rngs(0))
