"""The one exception type for mistakes a user can fix (bad flags, bad workdir, ...).

`gen_jax.main` prints a `UserError` as a single line and exits non-zero; every
other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
  """A problem with the user's input, with a message that says how to fix it."""
