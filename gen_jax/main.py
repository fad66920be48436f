r"""Train, evaluate or sample any experiment.

  python -m gen_jax.main --exp=vae_mnist --workdir=runs/vae_mnist \
      [--mode=train|eval|sample|score] [--config.train.num_steps=2000]

`--exp=NAME` picks experiments/NAME.py (`NAME:smoke` for its tiny variant;
`NAME:ARGS` joins its variants and smoke with '-', e.g.
`pixelcnn_mnist:cond-smoke`); every config field can be overridden as
`--config.SECTION.KEY=VALUE`.
"""

import sys

from absl import app
from absl import flags

from gen_jax import config as config_lib
from gen_jax import logging as log_lib
from gen_jax import parallel
from gen_jax import sampling
from gen_jax import scoring
from gen_jax import train as train_lib
from gen_jax.errors import Interrupted
from gen_jax.errors import Stopped
from gen_jax.errors import UserError

_EXPERIMENTS = ", ".join(config_lib.list_experiments())
_EXP = flags.DEFINE_string(
    "exp", None, "Experiment to run: NAME, or NAME:ARGS with its variants and "
    f"'smoke' joined by '-' (e.g. NAME:smoke). One of: {_EXPERIMENTS}.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for config, metrics, checkpoints and samples; "
    "re-running with the same workdir resumes.")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "eval", "sample", "score"],
    "train (resumes if possible), eval, sample, or score (how unusual each "
    "of --input is).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "host:port of process 0, for several "
    "processes started by hand (pods and SLURM are detected automatically).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0,
                                      "With --coordinator_address.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1,
                                   "With --coordinator_address.")
# Short flags, each an alias of a config key (config.FLAG_ALIASES).
_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
           float: flags.DEFINE_float, list: flags.DEFINE_multi_string}
_ALIASES = {name: _DEFINE[kind](name, None, f"{text} Sets --config.{key}.")
            for name, (key, kind, text) in config_lib.FLAG_ALIASES.items()}
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
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])} (flags take "
                    "--NAME=VALUE, config keys --config.SECTION.KEY=VALUE).")
  if not flags.FLAGS["verbosity"].present:
    log_lib.quiet_library_logs()
  config = config_lib.get_config(
      _EXP.value, _OVERRIDES,
      {name: flag.value for name, flag in _ALIASES.items()})
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                  _PROCESS_ID.value)
  if _MODE.value == "train":
    train_lib.train_and_evaluate(config, _WORKDIR.value)
  elif _MODE.value == "eval":
    train_lib.evaluate(config, _WORKDIR.value)
  elif _MODE.value == "sample":
    sampling.sample(config, _WORKDIR.value)
  else:
    scoring.score(config, _WORKDIR.value)


def _print_help() -> None:
  lines = [__doc__.strip(), "", "Experiments:"]
  for name in config_lib.list_experiments():
    lines.append(f"  {name:<22} {config_lib.describe(name)}")
  lines += ["", "Flags:", flags.FLAGS.main_module_help().split("\n", 1)[-1]]
  print("\n".join(lines))


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with its errors (a bad value, an unknown flag, a
  missing --exp) as one 'error:' line like every other bad input."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    raise UserError(str(e)) from None


def run():
  if any(a in ("-h", "--help", "--helpshort", "-?") for a in sys.argv[1:]):
    _print_help()
    sys.exit(0)
  argv = _split_overrides(sys.argv)
  try:
    app.run(main, argv=argv, flags_parser=_parse_flags)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except Stopped as e:  # a signal: preemption (SIGTERM) or Ctrl-C in training
    print(str(e), file=sys.stderr)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:
    print("Interrupted.", file=sys.stderr)
    sys.exit(Interrupted.exit_code)


if __name__ == "__main__":
  run()
