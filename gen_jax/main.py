r"""Train, evaluate or sample any experiment.

  python -m gen_jax.main --exp=vae_mnist --workdir=runs/vae_mnist \
      [--mode=train|eval|sample] [--config.train.num_steps=2000]

`--exp=NAME` picks experiments/NAME.py (`NAME:smoke` for its tiny variant);
every config field can be overridden as `--config.SECTION.KEY=VALUE`.
"""

import sys

from absl import app
from absl import flags

from gen_jax import config as config_lib
from gen_jax import logging as log_lib
from gen_jax import parallel
from gen_jax import train as train_lib
from gen_jax.errors import UserError

_EXPERIMENTS = ", ".join(config_lib.list_experiments())
_EXP = flags.DEFINE_string(
    "exp", None, f"Experiment to run, NAME or NAME:smoke. One of: {_EXPERIMENTS}.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for config, metrics, checkpoints and samples; "
    "re-running with the same workdir resumes.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"],
                          "train (resumes if possible), eval or sample.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "host:port of process 0, for several "
    "processes started by hand (pods and SLURM are detected automatically).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0,
                                      "With --coordinator_address.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1,
                                   "With --coordinator_address.")
# Sampler options, for families that have them (config.sample.*).
_SAMPLER = flags.DEFINE_string(
    "sampler", None, "Sampler of --mode=sample/eval, e.g. ddpm|ddim "
    "(sets --config.sample.sampler).")
_NUM_STEPS = flags.DEFINE_integer(
    "num_steps", None, "Sampling steps, 0 = all T (sets "
    "--config.sample.num_steps; --sampler alone implies 0).")
_GUIDANCE = flags.DEFINE_float(
    "guidance_scale", None, "Classifier-free guidance scale: 0 unconditional, "
    "1 conditional, >1 guided (sets --config.sample.guidance_scale).")
_TEMPERATURE = flags.DEFINE_float(
    "temperature", None, "Sampling temperature: of the latent noise (flows) "
    "or of the next-token distribution (language models; 0 = greedy). Sets "
    "--config.sample.temperature.")
_PROMPT = flags.DEFINE_multi_string(
    "prompt", None, "Text to continue (language models; repeat the flag for "
    "a batch of prompts; sets --config.sample.prompts).")
_TOP_K = flags.DEFINE_integer(
    "top_k", None, "Sample among the k most likely tokens, 0 = all (sets "
    "--config.sample.top_k).")
_TOP_P = flags.DEFINE_float(
    "top_p", None, "Nucleus sampling: the most likely tokens up to total "
    "probability p, 1 = all (sets --config.sample.top_p).")
_MAX_NEW = flags.DEFINE_integer(
    "max_new_tokens", None, "Tokens to generate per prompt (sets "
    "--config.sample.max_new_tokens).")
flags.register_validator("exp", lambda v: v is not None,
                         f"--exp is required. One of: {_EXPERIMENTS}.")
flags.register_validator("workdir", lambda v: v is not None,
                         "--workdir is required.")

_OVERRIDES: list[str] = []


def _split_overrides(argv: list[str]) -> list[str]:
  """Takes the --config.* flags out of argv (absl does not know them)."""
  rest = []
  for arg in argv:
    if arg.startswith("--config."):
      _OVERRIDES.append(arg[len("--config."):])
    else:
      rest.append(arg)
  return rest


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    log_lib.quiet_library_logs()
  num_steps = _NUM_STEPS.value
  if _SAMPLER.value is not None and num_steps is None:
    num_steps = 0  # a sampler named without --num_steps runs all T steps
  sampler_flags = {"sampler": _SAMPLER.value, "num_steps": num_steps,
                   "guidance_scale": _GUIDANCE.value,
                   "temperature": _TEMPERATURE.value,
                   "prompts": (None if _PROMPT.value is None
                               else repr(tuple(_PROMPT.value))),
                   "top_k": _TOP_K.value, "top_p": _TOP_P.value,
                   "max_new_tokens": _MAX_NEW.value}
  config = config_lib.get_config(_EXP.value, _OVERRIDES + [
      f"sample.{k}={v}" for k, v in sampler_flags.items() if v is not None],
      flag_names={f"sample.{k}": "--prompt" if k == "prompts" else f"--{k}"
                  for k in sampler_flags})
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                  _PROCESS_ID.value)
  if _MODE.value == "train":
    train_lib.train_and_evaluate(config, _WORKDIR.value)
  elif _MODE.value == "eval":
    train_lib.evaluate(config, _WORKDIR.value)
  else:
    train_lib.sample(config, _WORKDIR.value)


def _print_help() -> None:
  lines = [__doc__.strip(), "", "Experiments:"]
  for name in config_lib.list_experiments():
    lines.append(f"  {name:<22} {config_lib.describe(name)}")
  lines += ["", "Flags:", flags.FLAGS.main_module_help().split("\n", 1)[-1]]
  print("\n".join(lines))


def run():
  if any(a in ("-h", "--help", "--helpshort", "-?") for a in sys.argv[1:]):
    _print_help()
    sys.exit(0)
  argv = _split_overrides(sys.argv)
  try:
    app.run(main, argv=argv)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except train_lib.Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(143)  # 128 + SIGTERM, what a scheduler expects of a killed job


if __name__ == "__main__":
  run()
