"""Test setup: 8 simulated CPU devices, a shared TFDS data dir, helpers."""

import os
import pathlib
import subprocess
import sys
import tempfile

# Must happen before JAX is imported anywhere.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compiled programs are cached on disk and shared by every process of the
# suite (subprocesses and notebooks inherit it): many tests compile the same
# smoke step, and a hit takes a fraction of a second instead of seconds. A
# cache entry is the same program, so no result depends on it.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), "gen_jax_test_compile_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = pathlib.Path(__file__).resolve().parent.parent
# For `jax.jit(..., compiler_options=FAST_COMPILE)`: tests run tiny programs a
# few times, and XLA:CPU's optimization passes would take most of their time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


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
  """Runs `python -m gen_jax.main ARGS` with `devices` simulated CPU devices.

  XLA's CPU backend optimizes at level 0: in runs this small its optimization
  passes take most of the time (a U-Net's jitted init: 36 s at the default
  level on 2 cores, 5 s at 0), while the few steps run about as fast.
  """
  full_env = dict(os.environ)
  full_env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices}"
                           " --xla_backend_optimization_level=0")
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


def train_on_devices(family, batches, num_devices: int, metric_names,
                     init_batch=None, mesh_shape=None, return_sharded=False):
  """Runs `family.train_step` on the first `num_devices` devices (state
  initialized sharded by the family's partition rules, from `init_batch`
  when given, batches laid over the mesh, step keys 0, 1, ...).

  `mesh_shape`: the shape of the mesh over `config.mesh.axes` (default: the
  config's). `return_sharded`: return the final state as it lies on the
  devices (to inspect its shardings) instead of on the host.

  Returns ([steps, len(metric_names)] metrics, the final state).
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  from gen_jax import parallel  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  mesh_config = ml_collections.ConfigDict({"mesh": {
      "axes": tuple(family.config.mesh.axes),
      "shape": tuple(mesh_shape or family.config.mesh.shape)}})
  mesh = parallel.make_mesh(mesh_config, jax.devices()[:num_devices])
  if init_batch is not None:
    init_batch = parallel.global_batch(init_batch, mesh)
  abstract = jax.eval_shape(family.init, jax.random.key(0), init_batch)
  shardings = parallel.state_shardings(abstract, mesh,
                                       family.partition_rules(),
                                       family.config.mesh.fsdp_min_size)
  state = jax.jit(family.init, out_shardings=shardings,
                  compiler_options=FAST_COMPILE)(jax.random.key(0), init_batch)
  step = jax.jit(family.train_step,
                 in_shardings=(shardings, parallel.batch_sharding(mesh),
                               parallel.replicated(mesh)),
                 out_shardings=(shardings, parallel.replicated(mesh)),
                 compiler_options=FAST_COMPILE)
  rows = []
  for i, local in enumerate(batches):
    batch = parallel.global_batch(local, mesh)
    assert len(next(iter(batch.values())).sharding.device_set) == (
        num_devices)
    state, metrics = step(state, batch, jax.random.key(i))
    rows.append([float(metrics[name]) for name in metric_names])
  return np.array(rows), state if return_sharded else jax.device_get(state)


def execute_notebook(name: str, data_dir: str, workdir, monkeypatch):
  """Runs colab/<name> top to bottom at its tiny size; returns the code cells'
  outputs, after checking that none is an error."""
  import nbclient  # pylint: disable=g-import-not-at-top
  import nbformat  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("GEN_JAX_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("GEN_JAX_NOTEBOOK_WORKDIR", str(workdir))
  monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
  # The kernel imports this checkout's gen_jax, not whichever one pip
  # installed (an editable install of another checkout would otherwise win:
  # the kernel starts in colab/, where the checkout is not on sys.path).
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  # Backend optimization level 0: XLA's CPU backend spends most of a tiny run
  # optimizing code (36 s of the U-Net's jitted init alone at the default
  # level on 2 cores, 5 s at 0); the run itself is a few seconds either way.
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1 "
                     "--xla_backend_optimization_level=0")
  nb = nbformat.read(REPO / "colab" / name, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": str(
                                       REPO / "colab")}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  return outputs


def notebook_text(outputs) -> str:
  """Everything a notebook's cells printed (streams and plain-text results)."""
  parts = []
  for o in outputs:
    if o.output_type == "stream":
      parts.append(o.text)
    elif "text/plain" in o.get("data", {}):
      parts.append(o["data"]["text/plain"])
  return "\n".join(parts)


def write_safetensors(file, arrays) -> None:
  """{name: (safetensors dtype, little-endian bytes, shape)} -> a
  .safetensors file (8-byte header size, JSON header, the raw data)."""
  import json  # pylint: disable=g-import-not-at-top
  header, offset = {"__metadata__": {"format": "pt"}}, 0
  for name, (dtype, data, shape) in arrays.items():
    header[name] = {"dtype": dtype, "shape": list(shape),
                    "data_offsets": [offset, offset + len(data)]}
    offset += len(data)
  text = json.dumps(header).encode()
  with open(file, "wb") as f:
    f.write(len(text).to_bytes(8, "little") + text)
    for _, data, _ in arrays.values():
      f.write(data)


def write_gpt2_checkpoint(path, n_positions=32, n_embd=16, n_layer=2,
                          n_head=2, seed=0) -> str:
  """A random GPT-2 checkpoint directory in Hugging Face's layout, with a
  byte-level BPE of no merges (256 byte tokens + <|endoftext|>): what
  --config.init_from reads."""
  import json  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from gen_jax.data import tokenizers  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  vocab = {c: i for i, c in enumerate(tokenizers.bytes_to_unicode().values())}
  vocab["<|endoftext|>"] = len(vocab)
  (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
  (path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
  v, d = len(vocab), n_embd
  (path / "config.json").write_text(json.dumps({
      "model_type": "gpt2", "vocab_size": v, "n_positions": n_positions,
      "n_embd": d, "n_layer": n_layer, "n_head": n_head, "n_inner": None,
      "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}))
  rng = np.random.default_rng(seed)
  shapes = {"wte.weight": (v, d), "wpe.weight": (n_positions, d),
            "ln_f.weight": (d,), "ln_f.bias": (d,)}
  for i in range(n_layer):
    for name, shape in (("ln_1.weight", (d,)), ("ln_1.bias", (d,)),
                        ("attn.c_attn.weight", (d, 3 * d)),
                        ("attn.c_attn.bias", (3 * d,)),
                        ("attn.c_proj.weight", (d, d)),
                        ("attn.c_proj.bias", (d,)),
                        ("ln_2.weight", (d,)), ("ln_2.bias", (d,)),
                        ("mlp.c_fc.weight", (d, 4 * d)),
                        ("mlp.c_fc.bias", (4 * d,)),
                        ("mlp.c_proj.weight", (4 * d, d)),
                        ("mlp.c_proj.bias", (d,))):
      shapes[f"h.{i}.{name}"] = shape
  write_safetensors(path / "model.safetensors", {
      f"transformer.{k}": ("F32", (0.1 * rng.normal(size=s)).astype(
          "<f4").tobytes(), s) for k, s in shapes.items()})
  return str(path)
