"""FID Inception-v3: parity with torch-fidelity, the torch-free .pth reader, IS.

The parity test gives torch-fidelity's `FeatureExtractorInceptionV3` random
weights and random (non-trivial) batch-norm statistics, saves them with
`torch.save`, reads the file back with `gen_jax.importers.torch_files` and
requires every output to agree elementwise within 1e-4 of the output's scale:
|ours - ref| <= 1e-4 * (max|ref| + |ref|).
"""

import collections
import contextlib
import importlib
import subprocess
import sys
import types

import numpy as np
import pytest

from gen_jax.errors import UserError
from gen_jax.evaluation import inception
from gen_jax.importers import torch_files

_TORCH_REASON = ("torch (pip install -e '.[parity]') is needed to write .pth "
                 "files and run the torch-fidelity reference")
_OUTPUTS = ("features", "logits_unbiased", "logits")
_TOL = 1e-4


@contextlib.contextmanager
def _stand_in_torchvision():
  """Puts an empty `torchvision` in sys.modules for torch-fidelity's import.

  torch-fidelity only subclasses `torchvision.datasets.CIFAR10` / `STL10` at
  import time; the real package cannot be installed next to the CPU torch.
  """
  package = types.ModuleType("torchvision")
  datasets = types.ModuleType("torchvision.datasets")
  datasets.CIFAR10 = type("CIFAR10", (), {})
  datasets.STL10 = type("STL10", (), {})
  package.datasets = datasets
  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(sys.modules, "torchvision", package)
    mp.setitem(sys.modules, "torchvision.datasets", datasets)
    yield


def _torch_fidelity(submodule: str):
  pytest.importorskip("torch", reason=_TORCH_REASON)
  with _stand_in_torchvision():
    pytest.importorskip("torch_fidelity", reason="pip install --no-deps "
                        "torch-fidelity==0.3.0 for the reference network")
    return importlib.import_module(f"torch_fidelity.{submodule}")


def _randomize(model, torch) -> None:
  """He-normal convs, random fc, then random BN stats near the batch stats.

  Running statistics are first set to one training-mode batch's statistics
  (so activations stay finite through ~50 layers), then scaled and shifted
  at random, so a wrong eps, a dropped mean or a swapped key changes outputs.
  """
  gen = torch.Generator().manual_seed(0)
  bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.Conv2d):
        std = (2.0 / m.weight[0].numel()) ** 0.5
        m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
      elif isinstance(m, torch.nn.Linear):
        m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / 2048**0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
    for bn in bns:
      bn.weight.copy_(torch.rand(bn.num_features, generator=gen) * 0.5 + 0.5)
      bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.2)
      bn.momentum = 1.0
    model.train()
    noise = torch.randint(0, 256, (2, 3, 30, 30), dtype=torch.uint8,
                          generator=gen)
    blocky = noise[:1].repeat_interleave(10, 2).repeat_interleave(10, 3)
    model(torch.cat([blocky[:, :, :299, :299],
                     noise[1:].repeat(1, 1, 10, 10)[:, :, :299, :299]]))
    model.eval()
    for bn in bns:
      c = bn.num_features
      bn.running_var.mul_(torch.rand(c, generator=gen) * 0.5 + 0.75)
      bn.running_mean.add_(torch.randn(c, generator=gen) * 0.3 *
                           bn.running_var.sqrt())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """(path of a random-weight .pth, torch-fidelity extractor loaded from it)."""
  fe = _torch_fidelity("feature_extractor_inceptionv3")
  import torch  # pylint: disable=g-import-not-at-top
  features = ["2048", "logits_unbiased", "logits"]
  # Built without weights: the download hook hands back the fresh module's
  # own state dict; the real reference is then loaded from the saved file.
  fresh = fe.FeatureExtractorInceptionV3.__new__(fe.FeatureExtractorInceptionV3)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(fe, "load_state_dict_from_url",
               lambda *args, **kwargs: fresh.state_dict())
    fresh.__init__("inception-v3-compat", features)
  _randomize(fresh, torch)
  path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
  torch.save(fresh.state_dict(), path)
  ref = fe.FeatureExtractorInceptionV3(
      "inception-v3-compat", features, feature_extractor_weights_path=str(path))
  return path, ref.eval()


@pytest.fixture(scope="module")
def ours(reference):
  return inception.InceptionV3Features(str(reference[0]), batch_size=3)


def _run_reference(ref, images_NHWC: np.ndarray) -> dict[str, np.ndarray]:
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    outs = ref(torch.from_numpy(images_NHWC).permute(0, 3, 1, 2).contiguous())
  return {name: out.numpy() for name, out in zip(_OUTPUTS, outs)}


@pytest.mark.parametrize("shape", [(4, 32, 32, 3), (2, 299, 299, 3)])
def test_matches_torch_fidelity(reference, ours, shape):
  images = np.random.default_rng(sum(shape)).integers(0, 256, shape, np.uint8)
  want = _run_reference(reference[1], images)
  got = ours(images)
  assert got["features"].shape == (shape[0], 2048)
  assert got["logits"].shape == (shape[0], 1008)
  for name in _OUTPUTS:
    assert got[name].dtype == np.float32
    scale = float(np.abs(want[name]).max())
    assert scale > 1.0, f"{name}: degenerate reference outputs"
    np.testing.assert_allclose(got[name], want[name], rtol=_TOL,
                               atol=_TOL * scale, err_msg=name)


def test_float_and_grayscale_inputs_use_the_uint8_grid(ours):
  rng = np.random.default_rng(1)
  gray = rng.integers(0, 256, (2, 32, 32, 1), np.uint8)
  want = ours(np.repeat(gray, 3, axis=-1))
  got_gray = ours(gray)
  got_float = ours(gray.astype(np.float32) / 255.0)
  for name in _OUTPUTS:
    np.testing.assert_array_equal(got_gray[name], want[name])
    np.testing.assert_array_equal(got_float[name], want[name])
  with pytest.raises(ValueError, match="NaN"):
    ours(np.full((1, 8, 8, 3), np.nan, np.float32))


def test_reader_round_trips_torch_save(tmp_path):
  torch = pytest.importorskip("torch", reason=_TORCH_REASON)
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  state = collections.OrderedDict(
      float32=torch.randn(3, 4),
      float16=torch.randn(5).half(),
      float64=torch.randn(2, 2, dtype=torch.float64),
      int64=torch.arange(-3, 4),
      scalar=torch.tensor(7),
      transposed=base.t(),
      view=base[1:, 2:5],
      strided=base[:, ::2],
      shares_base=base,
      empty=torch.zeros(0, 3),
      flags=torch.tensor([True, False]),
      parameter=torch.nn.Parameter(torch.randn(2, 3)),
  )
  for zip_format in (True, False):
    path = tmp_path / f"state_{zip_format}.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    loaded = torch_files.load_state_dict(str(path))
    assert list(loaded) == list(state)
    for key, tensor in state.items():
      want = tensor.detach().numpy()
      assert loaded[key].dtype == want.dtype, key
      np.testing.assert_array_equal(loaded[key], want, err_msg=key)
  bf16 = tmp_path / "bf16.pth"
  torch.save({"x": torch.tensor([1.5, -2.0]).bfloat16()}, bf16)
  np.testing.assert_array_equal(
      torch_files.load_state_dict(str(bf16))["x"].astype(np.float32),
      [1.5, -2.0])


def test_reader_refuses_arbitrary_objects(tmp_path):
  torch = pytest.importorskip("torch", reason=_TORCH_REASON)
  path = tmp_path / "module.pth"
  torch.save(torch.nn.Linear(2, 2), path)
  with pytest.raises(torch_files.TorchFileError, match="torch.nn"):
    torch_files.load_state_dict(str(path))
  with pytest.raises(UserError, match="cannot read Inception weights"):
    inception.InceptionV3Features(str(path))


def test_missing_or_unreadable_file_names_the_weights(tmp_path):
  with pytest.raises(UserError, match=inception.WEIGHTS_FILE) as err:
    inception.InceptionV3Features(str(tmp_path / "absent.pth"))
  assert "not found" in str(err.value) and "\n" not in str(err.value)
  garbage = tmp_path / "garbage.pth"
  garbage.write_bytes(b"not a torch file")
  with pytest.raises(UserError, match=inception.WEIGHTS_FILE):
    inception.InceptionV3Features(str(garbage))


def test_wrong_keys_and_shapes_are_named(reference):
  state = torch_files.load_state_dict(str(reference[0]))
  with pytest.raises(UserError,
                     match="missing key 'Conv2d_1a_3x3.conv.weight'"):
    inception.InceptionV3Features.from_state_dict({})
  renamed = dict(state)
  renamed["Mixed_5b.branch1x1.conv.kernel"] = renamed.pop(
      "Mixed_5b.branch1x1.conv.weight")
  with pytest.raises(UserError,
                     match="unexpected key 'Mixed_5b.branch1x1.conv.kernel'"):
    inception.InceptionV3Features.from_state_dict(renamed)
  without = {k: v for k, v in state.items() if k != "fc.bias"}
  with pytest.raises(UserError, match="missing key 'fc.bias'"):
    inception.InceptionV3Features.from_state_dict(without)
  reshaped = dict(state, **{"fc.weight": state["fc.weight"].T})
  with pytest.raises(UserError, match=r"'fc.weight' has shape \(2048, 1008\)"):
    inception.InceptionV3Features.from_state_dict(reshaped)


def test_core_package_does_not_import_torch():
  code = ("import sys, gen_jax.evaluation.inception; "
          "assert 'torch' not in sys.modules, 'torch imported'")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _brute_force_inception_score(logits_NK, splits):
  scores = []
  n = len(logits_NK)
  for i in range(splits):
    chunk = np.asarray(logits_NK[i * n // splits:(i + 1) * n // splits],
                       np.float64)
    p = np.exp(chunk) / np.exp(chunk).sum(axis=1, keepdims=True)
    marginal = p.mean(axis=0)
    kl = [sum(pk * np.log(pk / mk) for pk, mk in zip(row, marginal))
          for row in p]
    scores.append(np.exp(np.mean(kl)))
  return np.mean(scores), np.std(scores)


def test_inception_score_matches_brute_force():
  logits = np.random.default_rng(2).normal(0, 3, (53, 20)).astype(np.float32)
  for splits in (1, 4, 10):
    got = inception.inception_score(logits, splits, shuffle_seed=None)
    want = _brute_force_inception_score(logits, splits)
    np.testing.assert_allclose(got, want, rtol=1e-10)
  perm = np.random.RandomState(2020).permutation(len(logits))
  np.testing.assert_allclose(inception.inception_score(logits, 4),
                             _brute_force_inception_score(logits[perm], 4),
                             rtol=1e-10)
  with pytest.raises(ValueError, match="splits"):
    inception.inception_score(logits[:3], splits=10)


def test_inception_score_matches_torch_fidelity():
  metric_isc = _torch_fidelity("metric_isc")
  import torch  # pylint: disable=g-import-not-at-top
  logits = np.random.default_rng(3).normal(0, 4, (250, 1008)).astype(np.float32)
  want = metric_isc.isc_features_to_metric(torch.from_numpy(logits))
  got = inception.inception_score(logits)
  np.testing.assert_allclose(
      got, (want[metric_isc.KEY_METRIC_ISC_MEAN],
            want[metric_isc.KEY_METRIC_ISC_STD]), rtol=1e-12)
