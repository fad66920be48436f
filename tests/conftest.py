"""Test setup: 8 simulated CPU devices, a shared TFDS data dir, helpers."""

import os
import pathlib
import subprocess
import sys

# Must happen before JAX is imported anywhere.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """A TFDS data dir holding the embedded MNIST subset (written once)."""
  path = os.environ.get("GEN_JAX_TEST_DATA_DIR")
  if not path:
    path = str(tmp_path_factory.getbasetemp().parent / "tfds_data")
  from gen_jax.data import embedded  # pylint: disable=g-import-not-at-top
  embedded.prepare(path)
  return path


def run_main(args: list[str], data_dir: str, devices: int = 1,
             timeout: float = 600, check: bool = True,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
  """Runs `python -m gen_jax.main ARGS` with `devices` simulated CPU devices."""
  full_env = dict(os.environ)
  full_env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  full_env["JAX_PLATFORMS"] = "cpu"
  full_env["TFDS_DATA_DIR"] = data_dir
  full_env.update(env or {})
  proc = subprocess.run([sys.executable, "-m", "gen_jax.main", *args],
                        capture_output=True, text=True, timeout=timeout,
                        env=full_env, cwd=REPO, check=False)
  if check and proc.returncode != 0:
    raise AssertionError(f"gen_jax.main {' '.join(args)} exited "
                         f"{proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
  return proc


@pytest.fixture(scope="session")
def classifier_workdir(data_dir, tmp_path_factory) -> str:
  """A smoke-trained MNIST feature classifier (for sample-quality evals)."""
  workdir = str(tmp_path_factory.mktemp("mnist_classifier"))
  run_main(["--exp=mnist_classifier:smoke", f"--workdir={workdir}"], data_dir)
  return workdir
