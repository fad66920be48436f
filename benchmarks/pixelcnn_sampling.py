r"""PixelCNN sampling: the full-pass sampler against the cached one.

  python benchmarks/pixelcnn_sampling.py                   # pixelcnn_mnist, 16
  python benchmarks/pixelcnn_sampling.py --num=4 --exp=pixelcnn_mnist:cond
  python benchmarks/pixelcnn_sampling.py --override=model.arch=plain

Builds the experiment's network with freshly initialized weights (the cost
of sampling does not depend on their values) and draws --num images twice
with the same key, in one process: with `sample.cached=True` (a cache of the
features later pixels read, gen_jax.models.pixelcnn_cache) and with
`sample.cached=False` (the whole network on the partial image at every
sub-pixel). Each sampler is called twice, to the images on the host: the
first call compiles, then samples; the second is the timed one, and the
compile time is reported as the difference. Prints seconds per image for
both, the speedup (full-pass / cached), whether the two drew the same
images, and each sampler's peak resident memory (benchmarks/memory.py: the
kernel's high-water mark, reset before each).
"""

import time

from absl import app
from absl import flags
import jax
import numpy as np

import memory
from gen_jax import config as config_lib
from gen_jax import families
from gen_jax import logging as log_lib

_EXP = flags.DEFINE_string("exp", "pixelcnn_mnist", "A PixelCNN experiment.")
_NUM = flags.DEFINE_integer("num", 16, "Images drawn per timed call.")
_OVERRIDES = flags.DEFINE_multi_string(
    "override", [], "Config overrides, e.g. --override=train.dtype=bfloat16.")


def _time_sampler(family, state, key, num):
  """(seconds of the first call, seconds of the second, the images)."""
  times = []
  for _ in range(2):
    t0 = time.perf_counter()
    images = np.asarray(family.sample(state, key, num))
    times.append(time.perf_counter() - t0)
  return times[0], times[1], images


def main(argv):
  del argv
  log_lib.quiet_library_logs()
  num = _NUM.value
  results = {}
  for cached in (True, False):
    config = config_lib.get_config(
        _EXP.value, [*_OVERRIDES.value, f"sample.cached={cached}"])
    family = families.build(config)
    state = jax.jit(family.init)(jax.random.key(config.seed), None)
    with memory.Peak() as mem:
      first, steady, images = _time_sampler(family, state, jax.random.key(1),
                                            num)
    results[cached] = (first, steady, images, mem)

  m = config.model
  print(f"experiment   {_EXP.value}: {m.arch}, {m.num_layers} layers of "
        f"{m.channels} features, {m.likelihood}, "
        f"{tuple(config.data.image_shape)}, {config.train.dtype}")
  print(f"backend      {jax.default_backend()}: {jax.device_count()} x "
        f"{jax.devices()[0].device_kind}")
  for cached, name in ((False, "full pass"), (True, "cached")):
    first, steady, _, mem = results[cached]
    print(f"{name:12} {steady / num:.3f} s/image ({num} images in "
          f"{steady:.2f} s); compile {first - steady:.1f} s (first call "
          f"{first:.2f} s); {mem.describe()}")
  speedup = results[False][1] / results[True][1]
  same = np.array_equal(results[True][2], results[False][2])
  print(f"speedup      {speedup:.1f}x; same images: {same}")


if __name__ == "__main__":
  app.run(main)
