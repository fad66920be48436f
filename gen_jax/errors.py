"""The exceptions `gen_jax.main` reports in one line, without a traceback.

A `UserError` is a problem the user can fix (bad flags, bad workdir, a full
disk): printed as 'error: ...', exit status 2. A `Stopped` run ended early on
a signal, on purpose: its message says what was kept and how to go on, and its
exit status is the signal's convention. Every other exception is a bug and
keeps its traceback.
"""


class UserError(Exception):
  """A problem with the user's input, with a message that says how to fix it."""


class Stopped(Exception):
  """The run stopped on a signal; `exit_code` is what a scheduler expects."""
  exit_code = 1


class Interrupted(Stopped):
  """Ctrl-C (SIGINT)."""
  exit_code = 130  # 128 + SIGINT
