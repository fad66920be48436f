r"""Our DDPM U-Net against diffusers' UNet2DModel: train steps/s and images/s.

  python benchmarks/unet_vs_diffusers.py [--steps=10] [--configs=ddpm_mnist]
  python benchmarks/unet_vs_diffusers.py --configs=ddpm_cifar10 --batch_sizes=8
  python benchmarks/unet_vs_diffusers.py --dtype=bfloat16 --nopeer  # ours only

Both networks run in one process, one after the other, on the same batch of
float32 images with the same number of CPU threads (`--threads`, default all
cores: torch.set_num_threads for the peer; XLA's CPU client uses every core).
For each network it times, after warm-up, the median of `--steps` single steps
of

  * training: draw t and eps, form x_t with the linear DDPM schedule, forward,
    mean squared error on eps, backward, Adam update (ours: one jax.jit with
    the parameters and the optimizer state donated, optax.adam; the peer:
    eager torch in train mode, torch.optim.Adam with its default
    implementation), and
  * forward only, as a sampler calls the network (ours: jit, no dropout; the
    peer: eval mode under torch.no_grad()),

and prints steps/s, images/s, the peak resident memory while each network
ran (benchmarks/memory.py; the device's peak on a GPU) and the ratio
ours / peer. Our compile time is reported apart. The peer is eager PyTorch
(no torch.compile), which is what a user of diffusers gets by default.

OpenMP (torch's CPU thread pool) spin-waits between parallel regions by
default; on a machine whose cores are busy with other work that made the peer
about 10x slower at 2 threads than at 1 here. The script therefore sets
OMP_WAIT_POLICY=PASSIVE unless the environment sets it (run with
OMP_WAIT_POLICY=ACTIVE on a dedicated machine to measure torch's default).

Configurations:

  * ddpm_mnist: the U-Net of experiments/ddpm_mnist.py (32 channels, mults
    (1, 2), 2 res blocks, attention at 7x7, 8 groups, dropout 0) at batch 64.
    It runs on 2x2 pixel patches folded into channels: ours folds inside the
    network; UNet2DModel has no such option, so its net takes the 14x14x4
    space-to-depth input and the benchmark folds (pixel_unshuffle) before and
    unfolds (pixel_shuffle) after calling it, inside the timed step.
  * ddpm_cifar10: UNetConfig.ddpm_cifar10() (35.7M parameters, 32x32x3,
    attention at 16x16) at batch 8, dropout 0.1 in both networks.

The matched UNet2DModel has block_out_channels = channels * mults,
layers_per_block = num_res_blocks, AttnDownBlock2D / AttnUpBlock2D exactly at
the levels where ours has attention (single head: attention_head_dim=None),
UNetMidBlock2D (res, attention, res), the same GroupNorm groups and epsilon
(1e-6), the same dropout, the same sinusoidal time embedding ([sin, cos],
frequency shift 1) and its 2-layer MLP to 4 * channels, stride-2 conv
downsampling and nearest + conv upsampling. Both parameter counts are printed.
What still differs: layout (NHWC in ours, NCHW in torch); attention
projections (one fused qkv Linear in ours, separate q/k/v in diffusers: the
same parameters) and the attention kernel (einsum + softmax vs torch's
scaled_dot_product_attention); the stride-2 conv pads (0, 1) in ours ('SAME')
and (1, 1) in diffusers (same shapes and cost); initialization (ours
zero-initializes the last conv of each block), which does not affect speed.

With --dtype=bfloat16 our network computes in bf16 (parameters stay float32)
while the peer stays float32 on CPU, so the ratio is not like for like; it is
meant for measuring our network alone on an accelerator (with --nopeer).
"""

import json
import os
import pathlib
import platform
import statistics
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import memory
from gen_jax import config as config_lib
from gen_jax.models import unet

_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per measurement "
                              "(the median is reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling.")
_CONFIGS = flags.DEFINE_list("configs", ["ddpm_mnist", "ddpm_cifar10"],
                             "Configurations: ddpm_mnist, ddpm_cifar10.")
_BATCH_SIZES = flags.DEFINE_list(
    "batch_sizes", [], "Batch size per entry of --configs (one value: all); "
    "default 64 for ddpm_mnist, 8 for ddpm_cifar10.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Compute dtype of our network (the peer: float32).")
_PEER = flags.DEFINE_bool("peer", True, "Also measure diffusers' UNet2DModel.")
_THREADS = flags.DEFINE_integer("threads", 0, "CPU threads for torch; "
                                "0: the cores this process may use.")
_LR = flags.DEFINE_float("learning_rate", 2e-4, "Adam learning rate (both).")
_OUT = flags.DEFINE_string("out", "", "Optional path of a JSON result file.")

# Read when torch loads OpenMP (torch is imported lazily, after this).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_BATCH = {"ddpm_mnist": 64, "ddpm_cifar10": 8}
NUM_TIMESTEPS = 1000


def unet_config(name: str, dtype: str) -> unet.UNetConfig:
  """Our network of a named configuration."""
  if name == "ddpm_cifar10":
    return unet.UNetConfig.ddpm_cifar10(dtype=dtype)
  if name == "ddpm_mnist":
    m = config_lib.get_config("ddpm_mnist").model
    return unet.UNetConfig(
        image_shape=(28, 28, 1), channels=m.channels,
        channel_mults=tuple(m.channel_mults), num_res_blocks=m.num_res_blocks,
        attention_resolutions=tuple(m.attention_resolutions),
        dropout=m.dropout, num_groups=m.num_groups, patch_size=m.patch_size,
        dtype=dtype)
  raise app.UsageError(f"--configs: unknown configuration '{name}' "
                       "(ddpm_mnist, ddpm_cifar10).")


def alphas_cumprod() -> np.ndarray:
  """abar_t of the linear DDPM schedule, [T] float32."""
  betas = np.linspace(1e-4, 0.02, NUM_TIMESTEPS, dtype=np.float64)
  return np.cumprod(1.0 - betas).astype(np.float32)


def median_rate(fn, steps: int) -> float:
  """Calls per second: 1 / the median wall time of `steps` calls of fn()."""
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return 1.0 / statistics.median(times)


# --- ours ------------------------------------------------------------------


def bench_ours(cfg: unet.UNetConfig, batch: int, steps: int,
               warmup: int) -> dict:
  """Train and forward rates of our U-Net (jit, params/opt state donated)."""
  model = unet.UNet(cfg, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  tx = optax.adam(_LR.value)
  opt_state = tx.init(params)
  abar_T = jnp.asarray(alphas_cumprod())
  use_dropout = cfg.dropout > 0

  def train_step(params, opt_state, x0_BHWC, key):
    t_key, eps_key, drop_key = jax.random.split(key, 3)
    t_B = jax.random.randint(t_key, (batch,), 0, NUM_TIMESTEPS)
    eps_BHWC = jax.random.normal(eps_key, x0_BHWC.shape)
    abar = abar_T[t_B][:, None, None, None]
    xt_BHWC = jnp.sqrt(abar) * x0_BHWC + jnp.sqrt(1.0 - abar) * eps_BHWC

    def loss_fn(p):
      net = nnx.merge(graphdef, p, rest)
      out = net(xt_BHWC, t_B, dropout_key=drop_key if use_dropout else None)
      return jnp.mean((out - eps_BHWC) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def forward(params, x_BHWC, t_B):
    return nnx.merge(graphdef, params, rest)(x_BHWC, t_B)

  x0 = jax.random.uniform(jax.random.key(1), (batch, *cfg.image_shape),
                          minval=-1.0, maxval=1.0)
  key = jax.random.key(2)
  t0 = time.perf_counter()
  train_c = jax.jit(train_step, donate_argnums=(0, 1)).lower(
      params, opt_state, x0, key).compile()
  compile_train_s = time.perf_counter() - t0
  t_B = jnp.full((batch,), NUM_TIMESTEPS // 2, jnp.int32)
  t0 = time.perf_counter()
  forward_c = jax.jit(forward).lower(params, x0, t_B).compile()
  compile_forward_s = time.perf_counter() - t0

  state = {"params": params, "opt_state": opt_state, "i": 0}

  def one_train():
    state["params"], state["opt_state"], loss = train_c(
        state["params"], state["opt_state"], x0,
        jax.random.fold_in(key, state["i"]))
    state["i"] += 1
    loss.block_until_ready()

  def one_forward():
    forward_c(state["params"], x0, t_B).block_until_ready()

  for _ in range(warmup):
    one_train()
  train_rate = median_rate(one_train, steps)
  for _ in range(warmup):
    one_forward()
  forward_rate = median_rate(one_forward, steps)
  return {"params": num_params, "train_steps_per_s": train_rate,
          "forward_calls_per_s": forward_rate,
          "compile_train_s": compile_train_s,
          "compile_forward_s": compile_forward_s}


# --- the peer: diffusers' UNet2DModel on CPU torch --------------------------


def diffusers_unet(cfg: unet.UNetConfig):
  """UNet2DModel built to match `cfg` as closely as its options allow."""
  from diffusers import UNet2DModel  # pylint: disable=g-import-not-at-top

  p = cfg.patch_size
  size = cfg.image_shape[0] // p
  down_types, up_types = [], []
  for level in range(len(cfg.channel_mults)):
    attn = size in cfg.attention_resolutions
    down_types.append("AttnDownBlock2D" if attn else "DownBlock2D")
    up_types.insert(0, "AttnUpBlock2D" if attn else "UpBlock2D")
    if level != len(cfg.channel_mults) - 1:
      size = -(-size // 2)
  c_img = cfg.image_shape[-1] * p * p
  return UNet2DModel(
      sample_size=cfg.image_shape[0] // p,
      in_channels=c_img,
      out_channels=c_img,
      time_embedding_type="positional",
      flip_sin_to_cos=False,  # [sin, cos] as ours
      freq_shift=1,  # frequencies exp(-log(1e4) i / (half - 1)) as ours
      down_block_types=tuple(down_types),
      mid_block_type="UNetMidBlock2D",
      up_block_types=tuple(up_types),
      block_out_channels=tuple(cfg.channels * m for m in cfg.channel_mults),
      layers_per_block=cfg.num_res_blocks,
      downsample_type="conv",
      downsample_padding=1,
      upsample_type="conv",
      dropout=cfg.dropout,
      act_fn="silu",
      attention_head_dim=None,  # one head over all channels, as ours
      norm_num_groups=cfg.num_groups,
      norm_eps=1e-6,
      resnet_time_scale_shift="default",
      add_attention=True,
  )


def bench_peer(cfg: unet.UNetConfig, batch: int, steps: int, warmup: int,
               threads: int) -> dict:
  """Train and forward rates of the matched UNet2DModel (eager torch, CPU)."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = diffusers_unet(cfg)
  num_params = sum(p.numel() for p in model.parameters())
  opt = torch.optim.Adam(model.parameters(), lr=_LR.value)
  abar_T = torch.from_numpy(alphas_cumprod())
  p = cfg.patch_size
  h, w, c = cfg.image_shape
  x0_BCHW = torch.rand(batch, c, h, w, dtype=torch.float32) * 2.0 - 1.0

  def net(x_BCHW, t_B):
    # Space-to-depth outside the model: UNet2DModel has no patch option.
    if p > 1:
      x_BCHW = F.pixel_unshuffle(x_BCHW, p)
    out = model(x_BCHW, t_B).sample
    return F.pixel_shuffle(out, p) if p > 1 else out

  def one_train():
    t_B = torch.randint(0, NUM_TIMESTEPS, (batch,))
    eps_BCHW = torch.randn_like(x0_BCHW)
    abar = abar_T[t_B].view(-1, 1, 1, 1)
    xt_BCHW = abar.sqrt() * x0_BCHW + (1.0 - abar).sqrt() * eps_BCHW
    loss = F.mse_loss(net(xt_BCHW, t_B), eps_BCHW)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  t_fwd = torch.full((batch,), NUM_TIMESTEPS // 2, dtype=torch.long)

  def one_forward():
    with torch.no_grad():
      net(x0_BCHW, t_fwd)

  model.train()
  for _ in range(warmup):
    one_train()
  train_rate = median_rate(one_train, steps)
  model.eval()
  for _ in range(warmup):
    one_forward()
  forward_rate = median_rate(one_forward, steps)
  return {"params": num_params, "train_steps_per_s": train_rate,
          "forward_calls_per_s": forward_rate,
          "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


# --- the table -------------------------------------------------------------


def batch_sizes(configs: list[str]) -> list[int]:
  given = [int(b) for b in _BATCH_SIZES.value]
  if not given:
    return [DEFAULT_BATCH.get(name, 8) for name in configs]
  if len(given) == 1:
    return given * len(configs)
  if len(given) != len(configs):
    raise app.UsageError(f"--batch_sizes: {len(given)} values for "
                         f"{len(configs)} configs.")
  return given


def main(argv):
  del argv
  threads = _THREADS.value or len(os.sched_getaffinity(0))
  configs = list(_CONFIGS.value)
  rows = []
  for name, batch in zip(configs, batch_sizes(configs)):
    cfg = unet_config(name, _DTYPE.value)
    with memory.Peak() as mem:
      ours = bench_ours(cfg, batch, _STEPS.value, _WARMUP.value)
    ours.update(mem.as_dict(), device_peak_bytes=memory.jax_device_peak())
    rows.append({"config": name, "framework": "gen_jax (jax/nnx)",
                 "dtype": _DTYPE.value, "batch": batch,
                 "dropout": cfg.dropout, **ours})
    print(f"[{name}] ours: {ours['params']:,} params, compiled the train "
          f"step in {ours['compile_train_s']:.1f}s, forward in "
          f"{ours['compile_forward_s']:.1f}s", flush=True)
    if _PEER.value:
      with memory.Peak() as mem:
        peer = bench_peer(cfg, batch, _STEPS.value, _WARMUP.value, threads)
      peer.update(mem.as_dict(), device_peak_bytes=memory.torch_device_peak())
      rows.append({"config": name, "framework": "diffusers UNet2DModel",
                   "dtype": "float32", "batch": batch,
                   "dropout": cfg.dropout, **peer})
      print(f"[{name}] diffusers: {peer['params']:,} params "
            f"({peer['params'] / ours['params']:.4f} x ours)", flush=True)
  for row in rows:
    row["train_images_per_s"] = row["train_steps_per_s"] * row["batch"]
    row["forward_images_per_s"] = row["forward_calls_per_s"] * row["batch"]
  by_config = {}
  for row in rows:
    by_config.setdefault(row["config"], []).append(row)
  for group in by_config.values():
    if len(group) == 2:
      ours, peer = group
      group[0]["ratio_train"] = ours["train_steps_per_s"] / peer[
          "train_steps_per_s"]
      group[0]["ratio_forward"] = ours["forward_calls_per_s"] / peer[
          "forward_calls_per_s"]

  device = jax.devices()[0]
  print(f"\nbackend {jax.default_backend()} "
        f"({getattr(device, 'device_kind', device.platform)}), {threads} "
        f"CPU threads (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}), "
        f"median of {_STEPS.value} steps after {_WARMUP.value} warm-up "
        "steps; ratio = ours / diffusers (train, forward)")
  header = (f"{'config':<13} {'framework':<21} {'dtype':<8} {'batch':>5} "
            f"{'params':>11} {'train st/s':>10} {'train im/s':>10} "
            f"{'fwd im/s':>9} {'peak RSS':>10} {'ratio':>13}")
  print(header)
  print("-" * len(header))
  for row in rows:
    ratio = (f"{row['ratio_train']:.2f}x / {row['ratio_forward']:.2f}x"
             if "ratio_train" in row else "")
    print(f"{row['config']:<13} {row['framework']:<21} {row['dtype']:<8} "
          f"{row['batch']:>5} {row['params']:>11,} "
          f"{row['train_steps_per_s']:>10.3f} "
          f"{row['train_images_per_s']:>10.1f} "
          f"{row['forward_images_per_s']:>9.1f} "
          f"{row['peak_rss_bytes'] / memory.GIB:>6.2f} GiB {ratio:>13}")
  print("peak RSS: the process's resident high-water mark while each ran "
        "(reset before each; it includes both frameworks' libraries)"
        + ("" if rows[0]["peak_rss_resettable"] else
           " -- not resettable here: the process's peak so far"))
  for row in rows:
    if row["device_peak_bytes"]:
      print(f"{row['config']} {row['framework']}: device peak "
            f"{row['device_peak_bytes'] / memory.GIB:.2f} GiB")

  if _OUT.value:
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "backend": jax.default_backend(),
        "device": str(getattr(device, "device_kind", device.platform)),
        "cpu_threads": threads,
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "steps": _STEPS.value,
        "warmup": _WARMUP.value, "jax": jax.__version__,
        "python": platform.python_version(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
