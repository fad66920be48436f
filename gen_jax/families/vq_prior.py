"""A Transformer prior over the codes of a trained VQ-VAE: the second stage
of "a Transformer generates images" (van den Oord et al. 2017 with a
Transformer in place of PixelCNN; Esser et al. 2021).

Each image becomes the stage-1 encoder's grid of codes, read in raster
order, after one start token: the class token `K + y` of a class-conditional
prior (`model.num_classes > 0`), else `K + num_classes`. The decoder-only
Transformer of the language models learns log p(z) = sum_i log p(z_i | z_<i)
(`models/transformer.py`); sampling is the KV-cache decoder of
`models/decoding.py` with the non-code tokens masked out, and the sampled
codes are decoded to pixels by the frozen VQ-VAE.

Reported: nats and bits per token of the held-out codes, and an upper bound
on bits/dim of the images: with the VQ-VAE's deterministic q(z|x),
-log p(x) <= -log p(x|z) - log p(z) at z = E(x), where p(x|z) is the
VQ-VAE decoder's Gaussian on uniformly dequantized pixels (vqvae.py) and
p(z) this prior (given the class, for a conditional prior).
"""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen_jax.errors import UserError
from gen_jax.families import base, likelihoods, register, stage1, vqvae
from gen_jax.models import decoding
from gen_jax.models import transformer


class CodesOnly:
  """A Transformer whose logits can only pick codes (ids < K): the start
  and class tokens are never drawn."""

  def __init__(self, model, num_codes: int):
    self.model = model
    self.num_codes = num_codes

  def init_cache(self, batch_size, num_slots):
    return self.model.init_cache(batch_size, num_slots)

  def extend(self, tokens_BT, valid_BT, cache):
    logits, cache = self.model.extend(tokens_BT, valid_BT, cache)
    codes = jnp.arange(logits.shape[-1]) < self.num_codes
    return jnp.where(codes, logits, -jnp.inf), cache


@register("vq_prior")
class VQPrior(base.OneNetwork):
  """An autoregressive Transformer over VQ-VAE codes."""

  trainable = stage1.TRAINABLE
  model_parallel = True

  def __init__(self, config, tokenizer=None):
    m, s = config.model, config.sample
    self.stage1 = stage1.Stage1(config)
    base.check_sizes(config, positive=("model.width", "model.num_heads",
                                       "model.num_layers"),
                     nonnegative=("model.num_classes", "model.mlp_width"))
    base.check_fraction(config, "model.dropout")
    if m.width % m.num_heads:
      raise UserError(f"--config.model.width={m.width} must be divisible by "
                      f"--config.model.num_heads={m.num_heads}.")
    if s.temperature < 0 or not 0 < s.top_p <= 1 or s.top_k < 0:
      raise UserError("--config.sample: temperature must be >= 0, top_k >= 0 "
                      f"and 0 < top_p <= 1 (got {s.temperature}, {s.top_k}, "
                      f"{s.top_p}).")
    h, w, _ = self.stage1.latent_shape
    self.seq_len = h * w
    self.num_codes = self.stage1.model_cfg.codebook_size
    self.num_classes = m.num_classes
    self.model_cfg = transformer.TransformerConfig(
        vocab_size=self.num_codes + self.num_classes + 1,
        context_length=self.seq_len + 1, num_layers=m.num_layers,
        num_heads=m.num_heads, width=m.width, mlp_width=m.mlp_width,
        dropout=m.dropout, dtype=config.train.dtype)
    super().__init__(config, tokenizer)
    self.num_dims = int(np.prod(config.data.image_shape))
    self._sample_fns = {}

  def build_network(self, rngs):
    return self.stage1.build(transformer.Transformer(self.model_cfg,
                                                     rngs=rngs), rngs)

  def warm_start(self, state, batch):
    del batch
    return stage1.warm_start(self, state)

  def partition_rules(self):
    return transformer.partition_rules(tuple(self.config.mesh.axes))

  def start_tokens(self, labels_B: jax.Array | None, num: int) -> jax.Array:
    if labels_B is None:
      return jnp.full((num,), self.num_codes + self.num_classes, jnp.int32)
    return self.num_codes + labels_B.astype(jnp.int32)

  def tokens(self, model, x_BHWC, labels_B) -> jax.Array:
    """Images in [-1, 1] -> [B, 1 + h w]: the start token, then the codes."""
    codes = model.autoencoder.encode(x_BHWC).reshape(x_BHWC.shape[0], -1)
    start = self.start_tokens(labels_B, x_BHWC.shape[0])
    return jax.lax.stop_gradient(jnp.concatenate([start[:, None], codes], 1))

  def _labels(self, batch):
    return batch["label"] if self.num_classes else None

  def code_nll(self, model, tokens_BT, rngs=None) -> jax.Array:
    """-log p(z_i | z_<i, start) [B, h w] in nats."""
    logits = model.main(tokens_BT[:, :-1], rngs=rngs)
    return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                           tokens_BT[:, 1:])

  def loss(self, network, batch, key):
    x = vqvae.to_model_space(batch["image"])
    tokens = self.tokens(network, x, self._labels(batch))
    nll = jnp.mean(self.code_nll(network, tokens, nnx.Rngs(dropout=key)))
    return nll, {"bits_per_token": nll / likelihoods.LOG2}

  def nlls(self, model, batch, key) -> tuple[jax.Array, jax.Array]:
    """Per example, nats: -log p(codes) under the prior and -log p(x |
    codes) of the dequantized image in [-1, 1] under the VQ-VAE decoder."""
    xq = vqvae.dequantized(batch["image"], key)
    tokens = self.tokens(model, xq, self._labels(batch))
    prior_nll = jnp.sum(self.code_nll(model, tokens), axis=1)  # [B]
    ae = model.autoencoder
    recon = ae.decode_indices(tokens[:, 1:].reshape(
        (-1,) + self.stage1.latent_shape[:2]))
    return prior_nll, vqvae.reconstruction_nll(ae, xq, recon)

  def score(self, state, batch, key, final=False):
    del final  # nothing is estimated but the dequantization noise
    prior_nll, rec_nll = self.nlls(self.inference_network(state), batch, key)
    nll = vqvae.bits_per_dim(rec_nll + prior_nll, self.num_dims) * (
        self.num_dims * likelihoods.LOG2)
    return {"nll": nll, "dims": jnp.full(nll.shape, float(self.num_dims)),
            "code_nll": prior_nll}

  def score_notes(self, final=False):
    return {"nll": "upper bound: -log p of the 8-bit image through its codes "
                   "(the prior's exact -log p of the codes + the VQ-VAE "
                   "decoder's, uniform dequantization, one draw)",
            "code_nll": "exact: -log p (nats) of the image's codes under the "
                        "prior"}

  def eval_step(self, state, batch, key, final=False):
    del final  # exact: nothing is estimated but the dequantization noise
    prior_nll, rec_nll = self.nlls(self.inference_network(state), batch, key)
    return {"nll": base.masked_sum(prior_nll, batch),
            "rec_nll": base.masked_sum(rec_nll, batch),
            "bits_per_dim": base.masked_sum(
                vqvae.bits_per_dim(rec_nll + prior_nll, self.num_dims),
                batch),
            "count": base.count(batch)}

  def summarize_eval(self, totals):
    out = super().summarize_eval(totals)
    loss = out.pop("nll") / self.seq_len
    return {"loss": loss, "bits_per_token": loss / likelihoods.LOG2,
            "bits_per_dim": out["bits_per_dim"], "rec_nll": out["rec_nll"]}

  # --- sampling --------------------------------------------------------------

  def _sample_fn(self, num: int, sharding):
    if (num, sharding) not in self._sample_fns:
      s = self.config.sample

      def fn(state, labels, key):
        model = self.inference_network(state)
        start = self.start_tokens(labels, num)[:, None]
        codes = decoding.generate(
            CodesOnly(model.main, self.num_codes), start,
            jnp.ones_like(start, bool), key, self.seq_len, s.temperature,
            s.top_k, s.top_p)
        h, w, _ = self.stage1.latent_shape
        x = model.autoencoder.decode_indices(codes.reshape(num, h, w))
        return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)
      self._sample_fns[num, sharding] = jax.jit(fn, out_shardings=sharding)
    return self._sample_fns[num, sharding]

  def sample(self, state, key, num, labels=None, sharding=None,
             progress=None):
    """Images [num, H, W, C]: codes drawn token by token (KV cache), then
    decoded by the VQ-VAE."""
    y = base.class_labels(num, self.num_classes, labels, sharding)
    out = self._sample_fn(num, sharding)(state, y, key)
    if progress is not None:
      out.block_until_ready()
      progress(1, 1)
    return out

  def visualize(self, state, batch, key):
    del batch
    return {"samples": self.sample_grid(state, key)}
