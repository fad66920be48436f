r"""Train-step throughput (and sampling time) of any experiment on the
current backend.

  python benchmarks/train_throughput.py --exp=vae_mnist [--steps=100]
  python benchmarks/train_throughput.py --exp=glow_mnist --sample_images=64

Prints the compile time apart from the steady-state rate, and the rate twice:
the compiled step alone on a batch already on the device, and the whole loop
with the Grain input pipeline feeding it. With --sample_images=N it also times
the family's sampler drawing N images (after one untimed call that compiles
it), as seconds per image: the cost of generation, which for autoregressive
models is one network pass per (sub-)pixel.
"""

import tempfile
import time

from absl import app
from absl import flags
import jax

from gen_jax import config as config_lib
from gen_jax import logging as log_lib
from gen_jax import parallel
from gen_jax import train

_EXP = flags.DEFINE_string("exp", "vae_mnist", "Experiment to measure.")
_STEPS = flags.DEFINE_integer("steps", 100, "Timed steps per measurement.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps after compiling.")
_SAMPLE_IMAGES = flags.DEFINE_integer(
    "sample_images", 0, "Also time drawing this many samples (0: skip).")
_OVERRIDES = flags.DEFINE_multi_string(
    "override", [], "Config overrides, e.g. --override=data.batch_size=256.")


def main(argv):
  del argv
  log_lib.quiet_library_logs()
  config = config_lib.get_config(_EXP.value, _OVERRIDES.value)
  run = train.setup(config, tempfile.mkdtemp(prefix="bench_"))
  state = jax.jit(run.family.init, out_shardings=run.state_shardings)(
      run.keys["init"], run.init_batch)
  step_fn = jax.jit(
      run.family.train_step,
      in_shardings=(run.state_shardings, parallel.batch_sharding(
          run.mesh, run.config.data.batch_size),
                    parallel.replicated(run.mesh)),
      out_shardings=(run.state_shardings, parallel.replicated(run.mesh)),
      donate_argnums=0)
  batch = parallel.global_batch(next(run.data.train), run.mesh)
  key = run.keys["train"]
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch, key).compile()
  compile_s = time.perf_counter() - t0

  for i in range(_WARMUP.value):
    state, metrics = compiled(state, batch, jax.random.fold_in(key, i))
  jax.block_until_ready(metrics)

  t0 = time.perf_counter()
  for i in range(_STEPS.value):
    state, metrics = compiled(state, batch, jax.random.fold_in(key, i))
  jax.block_until_ready(metrics)
  step_only = _STEPS.value / (time.perf_counter() - t0)

  t0 = time.perf_counter()
  for i in range(_STEPS.value):
    batch = parallel.global_batch(next(run.data.train), run.mesh)
    state, metrics = compiled(state, batch, jax.random.fold_in(key, i))
  jax.block_until_ready(metrics)
  with_data = _STEPS.value / (time.perf_counter() - t0)

  bs = config.data.batch_size
  device = jax.devices()[0]
  print(f"experiment   {_EXP.value} (global batch {bs}, {config.train.dtype})")
  print(f"backend      {jax.default_backend()}: {jax.device_count()} x "
        f"{getattr(device, 'device_kind', device.platform)}")
  print(f"compile      {compile_s:.2f} s")
  print(f"step only    {step_only:.2f} steps/s  {step_only * bs:.0f} examples/s")
  print(f"with data    {with_data:.2f} steps/s  {with_data * bs:.0f} examples/s")
  n = _SAMPLE_IMAGES.value
  if n:
    sample_key = run.keys["sample"]
    t0 = time.perf_counter()
    jax.block_until_ready(run.family.sample(state, sample_key, n))
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(run.family.sample(state, jax.random.fold_in(
        sample_key, 1), n))
    sample_s = time.perf_counter() - t0
    print(f"sampling     {n} images in {sample_s:.2f} s = "
          f"{sample_s / n * 1000:.1f} ms/image (first call, compiling: "
          f"{first_s:.1f} s)")


if __name__ == "__main__":
  app.run(main)
