"""Errors a user can act on: printed as one line by the CLI, never as a traceback."""


class UserError(Exception):
    """Bad input: say what was wrong, with the value, and what to do."""
