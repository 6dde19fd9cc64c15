"""Errors a user can cause and fix; the CLI prints only their one-sentence message."""


class UserError(ValueError):
  """A problem with the config, the data or the environment, with its fix in the message."""
