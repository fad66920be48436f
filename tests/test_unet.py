"""U-Net: self-attention sits at the same resolutions on the way down and up,
for even sizes and for odd ones that the way down rounds up (7 -> 4)."""

import collections

from flax import nnx
import jax
import jax.numpy as jnp
import pytest

from gen_jax.models import unet


def _attention_by_resolution(net, x_BHWC, monkeypatch):
  """Traces the network once (shapes only) and counts the attention blocks
  that ran, per path ('down', 'mid', 'up') and per input resolution (H, W)."""
  for path, blocks in (("down", net.down_attn), ("up", net.up_attn),
                       ("mid", [net.mid_attn])):
    for block in blocks:
      if block is not None:
        block.path = path  # static, so it survives the trace
  counts = {path: collections.Counter() for path in ("down", "mid", "up")}
  call = unet.AttentionBlock.__call__

  def recording_call(self, h_BHWC):
    counts[self.path][h_BHWC.shape[1:3]] += 1
    return call(self, h_BHWC)

  monkeypatch.setattr(unet.AttentionBlock, "__call__", recording_call)
  out = jax.eval_shape(lambda m, x: m(x, jnp.array([0, 500])), net, x_BHWC)
  return counts, out


@pytest.mark.parametrize("size,mults,attention,levels", [
    # 28 -> 14 -> 7 -> 4: the way up must not double 4 into 8, 16, 32.
    (28, (1, 1, 2, 2), (7, 14), (28, 14, 7, 4)),
    (32, (1, 2, 2), (16,), (32, 16, 8)),
])
def test_attention_mirrors_the_down_path(size, mults, attention, levels,
                                         monkeypatch):
  cfg = unet.UNetConfig(image_shape=(size, size, 1), channels=8,
                        channel_mults=mults, num_res_blocks=1,
                        attention_resolutions=attention, num_groups=4,
                        dropout=0.0, patch_size=1)
  net = nnx.eval_shape(lambda: unet.UNet(cfg, rngs=nnx.Rngs(0)))
  counts, out = _attention_by_resolution(
      net, jnp.zeros((2, size, size, 1)), monkeypatch)
  # One block per level on the way down and two on the way up (num_res_blocks
  # and num_res_blocks + 1), each followed by attention at the chosen sizes;
  # the middle always attends, at the smallest size.
  assert counts["down"] == {(r, r): 1 for r in attention}
  assert counts["up"] == {(r, r): 2 for r in attention}
  assert counts["mid"] == {(levels[-1], levels[-1]): 1}
  assert out.shape == (2, size, size, 1) and out.dtype == jnp.float32
  # The modules themselves: 1 + 2 attention blocks per chosen level.
  assert sum(b is not None for b in net.down_attn) == len(attention)
  assert sum(b is not None for b in net.up_attn) == 2 * len(attention)
