"""Config loading, overrides and their errors."""

import json
import pathlib

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
    ("data.cache=maybe", "expected a bool"),
    ("model.channels=a,b", "expected a tuple"),
    ("model.channels=1.5,2", "a tuple of int"),
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


def test_a_saved_config_missing_newer_keys_gets_their_defaults():
  saved = json.loads(config_lib.to_json(config_lib.get_config(
      "mnist_classifier")))
  del saved["train"]["b1"]  # as saved before the key existed
  config = config_lib.from_saved(saved)
  assert config.train.b1 == 0.9
  assert config.family == "classifier" and config.model.feature_dim == 128
