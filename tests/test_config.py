"""Config loading, overrides and their errors."""

import json
import pathlib
import re

import pytest

from gen_jax import config as config_lib
from gen_jax.errors import UserError


def test_every_experiment_loads_with_its_smoke_variant():
  names = config_lib.list_experiments()
  assert {"vae_mnist", "beta_vae_mnist", "cvae_mnist"} <= set(names)
  for name in names:
    for exp in (name, f"{name}:smoke"):
      config = config_lib.get_config(exp)
      assert config.family
      assert set(config_lib.flat_keys(config_lib.base_config())) <= set(
          config_lib.flat_keys(config))
    assert "python -m gen_jax.main --exp=" + name in (
        config_lib.load_module(name).__doc__)
    assert config_lib.describe(name)


def test_derived_experiments_edit_the_default():
  assert config_lib.get_config("beta_vae_mnist").model.beta == 4.0
  assert config_lib.get_config("cvae_mnist").model.num_classes == 10
  assert config_lib.get_config("vae_mnist:smoke").train.num_steps == 20


def test_overrides_are_typed():
  c = config_lib.get_config("vae_mnist", [
      "train.num_steps=7", "train.learning_rate=3e-4", "model.channels=8,16",
      "data.source=embedded", "train.ema_decay=0", "data.cache=false",
      "model.channels=(4, 8)"])
  assert c.train.num_steps == 7 and isinstance(c.train.num_steps, int)
  assert c.train.learning_rate == 3e-4
  assert c.train.ema_decay == 0.0 and isinstance(c.train.ema_decay, float)
  assert tuple(c.model.channels) == (4, 8)
  assert c.data.source == "embedded" and c.data.cache is False
  with pytest.raises(AttributeError):  # locked after overrides
    c.train.new_key = 1


@pytest.mark.parametrize("override, message", [
    ("train.num_step=5", "unknown config key. Nearest valid keys: "
                         "--config.train.num_steps"),
    ("num_steps=5", "--config.train.num_steps"),
    ("train.num_steps=5.5", "expected an int, got '5.5'"),
    ("train.num_steps=1.5e0", "expected an int, got '1.5e0'"),
    ("train.num_steps=1e99", "expected an int, got '1e99'"),  # beyond int64
    ("data.cache=maybe", "expected a bool"),
    ("model.channels=a,b", "expected a tuple"),
    ("model.channels=1.5,2", "a tuple of int"),
    ("model.channels=(16,", "expected a tuple such as 1,2,3, got '(16,'"),
    ("mesh.shape=1.5", "expected a tuple of int, got '1.5'"),
    ("train.num_steps", "needs a value"),
    ("train.dtype=float16", "'float16' is not one of float32, bfloat16"),
    ("train.num_steps=0", "must be positive"),
    ("mesh.shape=2,2", "one entry per axis"),
])
def test_bad_overrides_name_the_problem(override, message):
  with pytest.raises(UserError, match=message.replace("(", r"\(")
                     .replace(")", r"\)").replace(".", r"\.")):
    config_lib.get_config("vae_mnist", [override])


def test_unknown_experiment_lists_valid_ones():
  with pytest.raises(UserError) as e:
    config_lib.get_config("vae_mnits")
  assert "Did you mean 'vae_mnist'" in str(e.value)
  assert "beta_vae_mnist, cgan_mnist, cvae_mnist" in str(e.value)


def test_unknown_argument_names_the_variants_and_smoke():
  with pytest.raises(UserError) as e:
    config_lib.get_config("pixelcnn_mnist:cond-large")
  message = str(e.value)
  assert "'large'" in message and "binarized, cond, smoke" in message
  assert "\n" not in message
  with pytest.raises(UserError, match="valid: smoke "):  # no variants
    config_lib.get_config("vae_mnist:cond")
  with pytest.raises(UserError, match="valid: cond, smoke"):
    config_lib.get_config("sngan_cifar10:cond_smoke")  # '-' joins, not '_'
  with pytest.raises(UserError, match="exclude each other"):
    config_lib.get_config("flow_2d:moons-checkerboard")
  with pytest.raises(UserError, match="unknown experiment '_text'"):
    config_lib.get_config("_text")  # a shared module, not an experiment


def test_smoke_combines_with_variants():
  full = config_lib.get_config("pixelcnn_mnist:cond")
  tiny = config_lib.get_config("pixelcnn_mnist:cond-smoke")
  assert tiny.model.num_classes == 10 == full.model.num_classes
  assert tiny.train.num_steps == 20 and tiny.data.batch_size == 32
  assert tiny.model.channels == 8 < full.model.channels  # the model's shrink
  assert tiny.eval.num_samples == 10  # one per class
  assert config_lib.get_config("pixelcnn_mnist:smoke-cond").to_dict() == (
      tiny.to_dict())  # in any order
  sngan = config_lib.get_config("sngan_cifar10:cond-smoke")
  assert sngan.model.num_classes == 10 and sngan.train.num_steps == 20
  grid = config_lib.get_config("gan_mog2d:grid25-smoke")
  assert grid.data.name == "grid25" and grid.model.g_hidden == (32, 32)


def test_derived_smoke_keeps_the_derived_edits():
  assert config_lib.get_config("cvae_mnist:smoke").model.num_classes == 10
  assert config_lib.get_config("beta_vae_mnist:smoke").model.beta == 4.0
  wgan = config_lib.get_config("wgan_gp_cifar10:smoke")
  assert wgan.model.loss == "wgan_gp" and wgan.model.g_channels == (16,)
  assert config_lib.get_config("wgan_gp_cifar10").model.g_channels == (128,)


def test_families_do_not_import_the_config_module():
  families_dir = pathlib.Path(config_lib.__file__).parent / "families"
  sources = sorted(families_dir.glob("*.py"))
  assert sources
  for path in sources:
    text = path.read_text()
    for pattern in ("gen_jax.config", "from gen_jax import config"):
      assert pattern not in text, f"{path.name} imports {pattern}"


def test_structural_differences():
  import json  # pylint: disable=g-import-not-at-top
  a = config_lib.get_config("vae_mnist")
  saved = json.loads(config_lib.to_json(a))
  assert config_lib.structural_differences(saved, a) == []
  b = config_lib.get_config("vae_mnist", ["model.latent_dim=8",
                                          "train.num_steps=5"])
  assert config_lib.structural_differences(saved, b) == [
      "model.latent_dim: 32 -> 8"]
  c = config_lib.get_config("cvae_mnist")
  assert "model.num_classes: 0 -> 10" in config_lib.structural_differences(
      saved, c)
  # A DDPM run saved before `model.network` existed is a U-Net run: still
  # compatible; a DiT run is not.
  ddpm = config_lib.get_config("ddpm_mnist")
  saved = json.loads(config_lib.to_json(ddpm))
  del saved["model"]["network"]
  assert config_lib.structural_differences(saved, ddpm) == []
  assert "model.network: None -> 'dit'" in config_lib.structural_differences(
      saved, config_lib.get_config("ddpm_mnist:dit"))


def test_a_saved_config_missing_newer_keys_gets_their_defaults():
  saved = json.loads(config_lib.to_json(config_lib.get_config(
      "mnist_classifier")))
  del saved["train"]["b1"]  # as saved before the key existed
  config = config_lib.from_saved(saved)
  assert config.train.b1 == 0.9
  assert config.family == "classifier" and config.model.feature_dim == 128


@pytest.mark.parametrize("override, key, value", [
    ("train.num_steps=1e3", "train.num_steps", 1000),  # an exact integer
    ("train.num_steps=2.0", "train.num_steps", 2),
    ('data.name="mnist"', "data.name", "mnist"),  # quotes a script passed on
    ("data.name='mnist'", "data.name", "mnist"),
    ('train.num_steps="7"', "train.num_steps", 7),
    ("data.cache='false'", "data.cache", False),
    ("model.channels='8,16'", "model.channels", (8, 16)),
    ("model.channels=1e1,16", "model.channels", (10, 16)),
    ("mesh.axes=data,fsdp", "mesh.axes", ("data", "fsdp")),  # bare words
    ("mesh.axes=data", "mesh.axes", ("data",)),
    ("sample.labels=", "sample.labels", ()),
])
def test_overrides_accept_forms_users_write(override, key, value):
  overrides = [override] + (["mesh.shape=1,-1"] if "fsdp" in override else [])
  assert config_lib.get_config("vae_mnist", overrides)[key] == value


@pytest.mark.parametrize("override, message", [
    ("train.learning_rate=nan", "--config.train.learning_rate: expected a "
                                "finite float, got 'nan'."),
    ("train.learning_rate=inf", "expected a finite float"),
    ("mesh.shape=True", "--config.mesh.shape: expected a tuple of int, got "
                        "'True'."),
    pytest.param("model.channels=" + "(" * 500, "expected a tuple such as "
                 "1,2,3, got '" + "(" * 77 + "...'.", id="deeply-nested"),
    ("model=3", "--config.model: is a section, not a key; set its keys one by "
                "one, as --config.model.KEY=VALUE (its keys: beta, channels, "
                "hidden_dim, latent_dim, likelihood, num_classes)."),
    ("=3", "--config.=3: names no key; give --config.SECTION.KEY=VALUE"),
    ("seed=-1", "--config.seed: must be >= 0, got -1."),
    ("sample.seed=4294967296", "--config.sample.seed (--seed): must be at "
                               "most 4294967295"),
    ("sample.num_samples=-4", "--config.sample.num_samples (--num_samples): "
                              "must be >= 0, got -4."),
    ("sample.labels=2,-1", "--config.sample.labels (--labels): must be >= 0"),
    ("data.image_shape=28,0,1", "--config.data.image_shape: must be "
                                "positive, got (28, 0, 1)."),
    ("train.b2=1.0", "--config.train.b2: must be in [0, 1), got 1.0."),
    ("mesh.axes=data,data", "--config.mesh.axes=('data', 'data'): each axis "
                            "is one of data, fsdp, model, at most once."),
    ("mesh.axes=batch", "each axis is one of data, fsdp, model"),
    ("mesh.shape=0", "--config.mesh.shape=(0,): sizes must be >= 1, or -1 "
                     "(all remaining devices) for one axis."),
    ("eval.quality_samples=3", "sample quality needs at least 4 samples"),
])
def test_malformed_overrides_are_one_line(override, message):
  with pytest.raises(UserError, match=re.escape(message)) as e:
    config_lib.get_config("vae_mnist", [override])
  assert "\n" not in str(e.value)


def test_mnist_features_refuse_other_images():
  with pytest.raises(UserError, match=re.escape(
      "--config.eval.quality_features=mnist_classifier scores 28x28x1 "
      "images, not (32, 32, 3); use inception_v3.")):
    config_lib.get_config("ddpm_cifar10", [
        "eval.quality_features=mnist_classifier"])


def test_short_flags_with_bad_values_are_one_line():
  with pytest.raises(UserError, match=re.escape(
      "--labels=a,b: expected class ids such as 0,3,7.")):
    config_lib.flag_overrides({"labels": ["a,b"]})
  with pytest.raises(UserError, match=re.escape(
      "--labels=1,-1: class ids must be >= 0.")):
    config_lib.flag_overrides({"labels": ["1,-1"]})
  with pytest.raises(UserError, match=re.escape(
      "--temperature=nan: expected a finite number.")):
    config_lib.get_config("glow_mnist", flags={"temperature": float("nan")})
  assert config_lib.flag_overrides({"labels": ["1, 2", "3"], "seed": None}) == [
      "sample.labels=(1, 2, 3)"]


@pytest.mark.parametrize("overrides, flags, message", [
    (["sample.sampler=ddpm"], {"sampler": "ddim"},
     "--sampler=ddim conflicts with --config.sample.sampler=ddpm; give one of "
     "them."),
    (["sample.num_samples=8"], {"num_samples": 4},
     "--num_samples=4 conflicts with --config.sample.num_samples=8"),
    (["sample.num_steps=50"], {"num_steps": 20},
     "--num_steps=20 conflicts with --config.sample.num_steps=50"),
    (["sample.labels=1,2"], {"labels": ["1", "3"]},
     "--labels=1,3 conflicts with --config.sample.labels=1,2"),
    (["sample.num_samples=2", "sample.num_samples=8"], {"num_samples": 2},
     "--num_samples=2 conflicts with --config.sample.num_samples=8"),
])
def test_a_short_flag_and_its_key_must_agree(overrides, flags, message):
  with pytest.raises(UserError, match=re.escape(message)):
    config_lib.get_config("ddpm_cfg_mnist", overrides, flags)


def test_a_short_flag_and_its_key_may_repeat_one_value():
  c = config_lib.get_config(
      "ddpm_cfg_mnist", ["sample.sampler='ddim'", "sample.num_samples=4.0",
                         "sample.labels=(1, 2)"],
      {"sampler": "ddim", "num_samples": 4, "labels": ["1,2"], "seed": None})
  assert (c.sample.sampler, c.sample.num_samples) == ("ddim", 4)
  assert c.sample.num_steps == 0 and c.sample.labels == (1, 2)
  # A sampler named alone runs all steps, unless the steps are given.
  c = config_lib.get_config("ddpm_mnist", ["sample.num_steps=20"],
                            {"sampler": "ddim"})
  assert (c.sample.sampler, c.sample.num_steps) == ("ddim", 20)


@pytest.mark.parametrize("address, num, pid, message", [
    ("", 2, -1, "--num_processes and --process_id need "
                "--coordinator_address=HOST:PORT (of process 0)."),
    ("", 0, 1, "--num_processes and --process_id need"),
    ("localhost", 2, 0, "--coordinator_address=localhost: expected HOST:PORT"),
    ("localhost:x", 2, 0, "expected HOST:PORT, e.g. localhost:1234."),
    ("localhost:1234", 0, 0, "--coordinator_address needs --num_processes >= "
                             "1, got 0."),
    ("localhost:1234", 2, 2, "--process_id=2: must be in 0..1 "
                             "(--num_processes=2)."),
    ("localhost:1234", 2, -1, "--process_id=-1: must be in 0..1"),
])
def test_process_flags_must_agree(address, num, pid, message):
  from gen_jax import parallel  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match=re.escape(message)):
    parallel.initialize_distributed(address, num, pid)


@pytest.mark.parametrize("exp, overrides, message", [
    ("vae_mnist", ["model.latent_dim=0"],
     "--config.model.latent_dim=0: must be positive."),
    ("vae_mnist", ["model.channels=()"],
     "--config.model.channels=(): must be positive and not empty."),
    ("vae_mnist", ["eval.num_importance_samples=0"],
     "--config.eval.num_importance_samples=0: must be positive."),
    ("cvae_mnist", ["model.num_classes=-1"],
     "--config.model.num_classes=-1: must be >= 0."),
    ("ddpm_mnist", ["model.num_groups=3"],
     "--config.model.num_groups=3 does not divide the U-Net's"),
    ("ddpm_mnist", ["model.patch_size=3"],
     "--config.model.patch_size=3 does not divide the 28x28 image."),
    ("ddpm_mnist", ["model.num_timesteps=1"],
     "--config.model.num_timesteps=1: must be >= 2."),
    ("ddpm_mnist", ["model.beta_end=1e-5"],
     "need 0 < beta_start <= beta_end < 1."),
    ("mnist_classifier", ["model.channels=8,8,8,8,8"],
     "--config.model.channels=(8, 8, 8, 8, 8): each entry halves the image, "
     "and 28x28 cannot be halved 5 times."),
    ("dcgan_mnist", ["model.g_channels=()"],
     "--config.model.g_channels=(): must be positive and not empty."),
    ("gan_mog2d", ["model.g_hidden=64,0"],
     "--config.model.g_hidden=(64, 0): must be positive and not empty."),
    ("flow_2d", ["data.image_shape=()"],
     "--config.data.image_shape=(): the flow family models images [H, W, C] "
     "or vectors [D]."),
    ("transformer_shakespeare", ["model.num_heads=0"],
     "--config.model.num_heads=0: must be positive."),
    ("transformer_shakespeare", ["model.attention_impl=flash"],
     "--config.model.attention_impl: 'flash' is not one of einsum, xla, cudnn"),
    ("transformer_shakespeare", ["sample.prompts=()"],
     "--config.sample.prompts: needs at least one prompt"),
    ("lstm_shakespeare", ["model.hidden=-8"],
     "--config.model.hidden=-8: must be positive."),
])
def test_families_refuse_sizes_they_cannot_build(exp, overrides, message):
  from gen_jax import families  # pylint: disable=g-import-not-at-top
  from gen_jax.data import tokenizers  # pylint: disable=g-import-not-at-top
  config = config_lib.get_config(exp, overrides)
  text = config.family == "autoregressive"
  with pytest.raises(UserError, match=re.escape(message)):
    families.build(config, tokenizers.ByteTokenizer() if text else None)


def test_image_families_refuse_text_data():
  from gen_jax import families  # pylint: disable=g-import-not-at-top
  from gen_jax.data import tokenizers  # pylint: disable=g-import-not-at-top
  config = config_lib.get_config("vae_mnist", ["data.name=tiny_shakespeare"])
  with pytest.raises(UserError, match=re.escape(
      "--config.data.name=tiny_shakespeare is text, which the 'vae' family "
      "does not model.")):
    families.build(config, tokenizers.ByteTokenizer())
