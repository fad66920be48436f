"""Two-stage models: the stage-1 load and its errors, latents, the token
prior's causality and code-only sampling, cross-attention and the text
encoder against reference computations, captions in the pipeline, and
classifier-free guidance over captions."""

import json
import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FAST_COMPILE, run_main
from gen_jax import checkpointing
from gen_jax import config as config_lib
from gen_jax import families
from gen_jax import train
from gen_jax.data import captions
from gen_jax.data import pipeline
from gen_jax.errors import UserError
from gen_jax.families import denoisers, stage1, vq_prior
from gen_jax.models import decoding
from gen_jax.models import text_conditioning as tc

RNG = np.random.default_rng(0)
_QUIET = ["train.log_every=100", "eval.num_examples=32",
          "data.eval_batch_size=32"]


@pytest.fixture(scope="module")
def vq_workdir(data_dir, tmp_path_factory):
  """A VQ-VAE smoke run of 4 steps (the stage 1 of every test here)."""
  workdir = tmp_path_factory.mktemp("two_stage") / "vqvae"
  config = config_lib.get_config("vqvae_mnist:smoke", [
      f"data.data_dir={data_dir}", "train.num_steps=4", "train.ckpt_every=4",
      "train.eval_every=4", "train.sample_every=4", *_QUIET])
  train.train_and_evaluate(config, str(workdir))
  return str(workdir)


def _config(exp, vq_workdir, data_dir, *overrides):
  return config_lib.get_config(exp, [
      f"autoencoder.workdir={vq_workdir}", f"data.data_dir={data_dir}",
      *_QUIET, *overrides])


def _batch(n=4):
  return {"image": RNG.integers(0, 256, (n, 28, 28, 1)).astype(np.uint8),
          "label": RNG.integers(0, 10, n).astype(np.int32)}


def _value(leaf):
  return leaf["value"] if isinstance(leaf, dict) else leaf


def _init(family, batch):
  state = jax.jit(family.init, compiler_options=FAST_COMPILE)(
      jax.random.key(0), batch)
  return family.warm_start(state, batch)


def test_a_missing_or_wrong_stage_1_names_the_experiment_to_train(
    vq_workdir, data_dir, tmp_path):
  def refused(workdir):
    with pytest.raises(UserError) as e:
      families.build(_config("ldm_mnist:smoke", workdir, data_dir))
    return str(e.value)

  message = refused(str(tmp_path / "none"))
  assert "no trained run" in message and "--exp=vqvae_mnist:smoke" in message
  other = tmp_path / "vae"
  other.mkdir()
  vae = config_lib.get_config("vae_mnist:smoke").to_dict()
  (other / "config.json").write_text(json.dumps(vae))
  assert "'vae' run, not a VQ-VAE" in refused(str(other))
  # A VQ-VAE of other images.
  saved = json.loads((pathlib.Path(vq_workdir) / "config.json").read_text())
  saved["data"]["image_shape"] = [32, 32, 3]
  (other / "config.json").write_text(json.dumps(saved))
  assert "trained on mnist (32, 32, 3)" in refused(str(other))
  # A config without a checkpoint: refused at step 0, naming the experiment.
  saved["data"]["image_shape"] = [28, 28, 1]
  (other / "config.json").write_text(json.dumps(saved))
  family = families.build(_config("ldm_mnist:smoke", str(other), data_dir))
  with pytest.raises(UserError, match="no checkpoint there; train it first"):
    _init(family, _batch())


def test_latents_are_the_stage_1_encoders_scaled_and_decode_like_it(
    vq_workdir, data_dir):
  family = families.build(_config("ldm_mnist:smoke", vq_workdir, data_dir))
  batch = _batch(8)
  state = _init(family, batch)
  model = family.network(state.params, state.rest)
  saved = checkpointing.load_state(vq_workdir)
  np.testing.assert_array_equal(
      model.autoencoder.encoder.out.kernel[...],
      _value(saved["params"]["encoder"]["out"]["kernel"]))
  np.testing.assert_array_equal(model.autoencoder.quantizer.codebook[...],
                                _value(saved["rest"]["quantizer"]["codebook"]))
  x = batch["image"].astype(np.float32) / 127.5 - 1
  z = model.autoencoder.encoder(jnp.asarray(x))
  assert float(model.latent_std[...]) == pytest.approx(float(jnp.std(z)),
                                                       rel=1e-5)
  latents = stage1.encode_latents(model, batch["image"])
  np.testing.assert_allclose(latents, z / jnp.std(z), rtol=1e-5, atol=1e-6)
  assert latents.shape == (8, 7, 7, 4)
  # Decoding the scaled latents is the VQ-VAE's reconstruction.
  z_q, _, _ = model.autoencoder.quantizer(z)
  want = jnp.clip((model.autoencoder.decoder(z_q) + 1) / 2, 0, 1)
  np.testing.assert_allclose(stage1.decode_latents(model, latents), want,
                             atol=1e-5)
  # Training moves the flow model only; the autoencoder is frozen.
  assert set(state.params) == {"main"}
  new, _ = jax.jit(family.train_step, compiler_options=FAST_COMPILE)(
      state, batch, jax.random.key(1))
  for a, b in zip(jax.tree.leaves(state.rest), jax.tree.leaves(new.rest)):
    np.testing.assert_array_equal(a, b)
  images = family.sample(new, jax.random.key(2), 2)
  assert images.shape == (2, 28, 28, 1)


def test_token_prior_is_causal_and_samples_only_codes(vq_workdir, data_dir):
  family = families.build(_config("vq_prior_mnist:smoke", vq_workdir,
                                  data_dir))
  batch = _batch(2)
  state = _init(family, batch)
  model = family.inference_network(state)
  tokens = np.asarray(family.tokens(
      model, jnp.asarray(batch["image"] / 127.5 - 1, jnp.float32),
      batch["label"]))
  assert tokens.shape == (2, 50)
  np.testing.assert_array_equal(tokens[:, 0], 16 + batch["label"])
  nll = np.asarray(family.code_nll(model, jnp.asarray(tokens)))
  changed = tokens.copy()
  changed[:, 30:] = (changed[:, 30:] + 5) % 16  # codes after position 29
  nll2 = np.asarray(family.code_nll(model, jnp.asarray(changed)))
  # Targets 1..29 are predicted from tokens 0..28: unchanged.
  np.testing.assert_allclose(nll[:, :29], nll2[:, :29], rtol=1e-5, atol=1e-6)
  assert not np.allclose(nll[:, 29:], nll2[:, 29:])
  # The class and start tokens are never drawn, even when most likely.
  class Favours:
    def init_cache(self, b, slots):
      return jnp.zeros(())

    def extend(self, tokens, valid, cache):
      del valid
      logits = jnp.zeros(tokens.shape + (27,)).at[..., 20].set(50.0)
      return logits, cache
  drawn = decoding.generate(vq_prior.CodesOnly(Favours(), 16),
                            jnp.zeros((3, 1), jnp.int32),
                            jnp.ones((3, 1), bool), jax.random.key(0), 30)
  assert int(jnp.max(drawn)) < 16
  images = family.sample(state, jax.random.key(1), 3, np.array([1, 2, 3]))
  assert images.shape == (3, 28, 28, 1)
  assert 0 <= float(images.min()) and float(images.max()) <= 1


def test_cross_attention_masks_padding_and_matches_a_reference():
  attn = tc.CrossAttention(8, 6, 2, jnp.float32, rngs=nnx.Rngs(0))
  attn.out.kernel[...] = jnp.asarray(RNG.normal(size=(8, 8)), jnp.float32)
  x = RNG.normal(size=(2, 5, 8)).astype(np.float32)
  ctx = RNG.normal(size=(2, 7, 6)).astype(np.float32)
  mask = np.zeros((2, 7), bool)
  mask[0, :4] = mask[1, :2] = True
  out = np.asarray(attn(jnp.asarray(x), jnp.asarray(ctx), jnp.asarray(mask)))

  def reference(i):
    h = np.asarray(attn.norm(jnp.asarray(x[i])))
    q = h @ np.asarray(attn.q.kernel[...]) + np.asarray(attn.q.bias[...])
    kv = ctx[i][mask[i]] @ np.asarray(attn.kv.kernel[...]) + np.asarray(
        attn.kv.bias[...])
    k, v = kv[:, :8], kv[:, 8:]
    heads = []
    for j in range(2):
      qs, ks, vs = (a[:, 4 * j:4 * j + 4] for a in (q, k, v))
      w = np.exp(qs @ ks.T / 2.0)
      heads.append((w / w.sum(1, keepdims=True)) @ vs)
    o = np.concatenate(heads, 1)
    return x[i] + o @ np.asarray(attn.out.kernel[...]) + np.asarray(
        attn.out.bias[...])
  for i in range(2):
    np.testing.assert_allclose(out[i], reference(i), rtol=1e-4, atol=1e-5)
  noisy = ctx.copy()
  noisy[~mask] = 100.0 * RNG.normal(size=noisy[~mask].shape)
  np.testing.assert_allclose(
      attn(jnp.asarray(x), jnp.asarray(noisy), jnp.asarray(mask)), out,
      rtol=1e-5, atol=1e-5)


def test_text_features_of_a_caption_ignore_its_padding():
  encoder = tc.TextEncoder(tc.TextEncoderConfig(max_length=24, width=16,
                                                depth=2, num_heads=2),
                           rngs=nnx.Rngs(0))
  short = captions.encode(["a thick seven", "a one"], 16)
  long = captions.encode(["a thick seven", "a one"], 24)
  f_short, m_short = encoder(jnp.asarray(short))
  f_long, _ = encoder(jnp.asarray(long))
  real = np.asarray(m_short)
  np.testing.assert_allclose(np.asarray(f_short)[real],
                             np.asarray(f_long)[:, :16][real], atol=1e-5)


def test_captions_come_with_the_batches(data_dir):
  config = config_lib.get_config("txt2img_mnist:smoke", [
      f"data.data_dir={data_dir}", "autoencoder.workdir=unused"])
  data = pipeline.make(config)
  assert data.tokenizer.class_prompt(8) == "an eight"
  batch = next(data.train)
  assert batch["caption"].shape == (32, 40)
  assert (batch["caption"][:, 0] == captions.BYTE_BOS).all()
  texts = [captions.decode(row) for row in batch["caption"]]
  for text, label in zip(texts, batch["label"]):
    assert captions.parse(text)["label"] == label
  again = next(iter(pipeline.make(config).train))
  np.testing.assert_array_equal(again["caption"], batch["caption"])
  # Held out: full captions, as `digit_captions` writes them.
  eval_batch = next(data.eval_batches())
  want = captions.digit_captions(eval_batch["image"], eval_batch["label"])
  assert [captions.decode(r) for r in eval_batch["caption"]] == want
  # Words are dropped in training (keep 0.5): some captions are shorter.
  full = captions.digit_captions(batch["image"], batch["label"])
  assert sum(a != b for a, b in zip(texts, full)) > 5


def test_guidance_over_captions_at_scale_0_and_1(vq_workdir, data_dir):
  config = _config("txt2img_mnist:smoke", vq_workdir, data_dir)
  with pytest.raises(UserError, match="caption tokenizer"):
    families.build(config)
  family = families.build(config, captions.CaptionTokenizer(40))
  ids = jnp.asarray(captions.encode(["a thick seven", "a one"], 40))
  null = family.null_condition(ids)
  assert captions.decode(np.asarray(null[0])) == "" and null[0, 0] == 1

  def net(x, t, y):  # depends on the caption through its ids' sum
    return 0.5 * x + jnp.sum(y, axis=1)[:, None, None, None] / 1000.0
  x = jnp.asarray(RNG.normal(size=(2, 7, 7, 4)), jnp.float32)
  t = jnp.ones((2,))
  for scale, want in ((0.0, net(x, t, null)), (1.0, net(x, t, ids)),
                      (3.0, net(x, t, null) + 3 * (net(x, t, ids)
                                                    - net(x, t, null)))):
    np.testing.assert_allclose(
        denoisers.guided(net, x, t, ids, scale, null), want, rtol=1e-5,
        atol=1e-6)
  # Training drops captions to the empty one at model.label_dropout.
  batch = {"caption": np.tile(np.asarray(ids[:1]), (1000, 1))}
  y = family.condition(batch, jax.random.key(0), training=True)
  dropped = float(jnp.mean(jnp.all(y == null[:1], axis=1)))
  assert abs(dropped - 0.1) < 0.03


def test_text_to_image_trains_draws_each_prompt_and_scores_prompts(
    vq_workdir, data_dir, tmp_path, classifier_workdir):
  workdir = tmp_path / "t2i"
  common = ["--exp=txt2img_mnist:smoke", f"--workdir={workdir}",
            f"--config.autoencoder.workdir={vq_workdir}",
            "--config.train.num_steps=4", "--config.train.eval_every=4",
            "--config.train.sample_every=4", "--config.train.ckpt_every=4",
            "--config.eval.num_examples=32", "--config.data.eval_batch_size=32"]
  run_main(common, data_dir)
  proc = run_main([*common, "--mode=sample", "--prompt=a thick seven",
                   "--prompt=a thin, slanted one", "--guidance_scale=3"],
                  data_dir)
  samples = workdir / "samples"
  assert (samples / "sample_prompt0_a_thick_seven_step_4.png").exists()
  assert (samples / "sample_prompt1_a_thin__slanted_one_step_4.png").exists()
  assert "sample_step_4.png" in proc.stdout
  run_main([*common, "--mode=eval", "--num_steps=2",
            "--config.eval.prompts=a thick seven,a thin seven",
            "--config.eval.samples_per_prompt=2",
            "--config.eval.guidance_scales=(1.0, 2.0)",
            f"--config.eval.classifier_workdir={classifier_workdir}"],
           data_dir)
  result = json.loads((workdir / "eval_step_4.json").read_text())
  for scale in ("1", "2"):
    assert 0 <= result[f"accuracy_s{scale}"] <= 1
    assert 0 <= result[f"accuracy_s{scale}/a thick seven"] <= 1
    assert 0 <= result[f"thickness_agreement_s{scale}"] <= 1
    assert np.isfinite(result[f"thick_minus_thin_s{scale}"])
  # The held-out digits grouped by their measured words: thick > thin.
  assert result["real_thick_minus_thin"] > 0.5
  assert result["real_slanted_minus_upright"] > 0.1
  assert "slant_agreement_s1" not in result  # no prompt names a slant


@pytest.mark.parametrize("network", ["unet", "dit"])
def test_both_denoisers_read_the_caption_and_never_its_padding(network):
  from gen_jax.models import dit, unet  # pylint: disable=g-import-not-at-top
  if network == "unet":
    net = unet.UNet(unet.UNetConfig(
        image_shape=(7, 7, 4), channels=8, channel_mults=(1,),
        num_res_blocks=1, attention_resolutions=(7,), num_groups=4,
        dropout=0.0, context_dim=6, context_heads=2), rngs=nnx.Rngs(0))
  else:
    net = dit.DiT(dit.DiTConfig(image_shape=(7, 7, 4), patch_size=1, width=8,
                                depth=1, num_heads=2, context_dim=6,
                                context_heads=2), rngs=nnx.Rngs(0))
  # Fresh cross-attention outputs are zero (identity blocks) and adaLN-Zero
  # zeroes the DiT: give every zero-initialized weight random values.
  _, params, rest = nnx.split(net, nnx.Param, ...)
  params = jax.tree.map(
      lambda p: p + 0.3 * jax.random.normal(jax.random.key(p.size), p.shape),
      params)
  net = nnx.merge(nnx.graphdef(net), params, rest)
  x = jnp.asarray(RNG.normal(size=(2, 7, 7, 4)), jnp.float32)
  t = jnp.asarray([100.0, 500.0])
  ctx = RNG.normal(size=(2, 5, 6)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], bool)
  out = net(x, t, context=jnp.asarray(ctx), context_mask=jnp.asarray(mask))
  noisy = ctx.copy()
  noisy[~mask] = 50.0
  np.testing.assert_allclose(
      net(x, t, context=jnp.asarray(noisy), context_mask=jnp.asarray(mask)),
      out, rtol=1e-5, atol=1e-5)
  other = ctx.copy()
  other[mask] += 1.0
  assert not np.allclose(
      net(x, t, context=jnp.asarray(other), context_mask=jnp.asarray(mask)),
      out, atol=1e-3)


def test_ddpm_learns_latents_too(vq_workdir, data_dir):
  config = config_lib.get_config("ddpm_mnist:smoke", [
      f"data.data_dir={data_dir}", "model.patch_size=1",
      "model.channel_mults=(1,)", "model.num_groups=4", "sample.num_steps=3",
      "model.attention_resolutions=(7,)"])
  with config.unlocked():
    config_lib.load_module("_latent").autoencoder(config, vq_workdir,
                                                  "vqvae_mnist:smoke")
  with pytest.raises(UserError, match="clip_denoised"):
    families.build(config)
  config.sample.clip_denoised = False
  family = families.build(config)
  batch = _batch(4)
  state = _init(family, batch)
  new, metrics = jax.jit(family.train_step, compiler_options=FAST_COMPILE)(
      state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"])) and set(new.params) == {"main"}
  sums = jax.jit(family.eval_step, compiler_options=FAST_COMPILE)(
      new, {**batch, "mask": np.ones(4, np.float32)}, jax.random.key(2))
  assert set(sums) == {"loss", "count"}  # no pixel bound for latents
  assert family.sample(new, jax.random.key(3), 2).shape == (2, 28, 28, 1)
