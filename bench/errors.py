"""Errors that carry a one-line, user-facing reason.

The CLI turns a `UserInputError` into that line on stderr and exit code 2, so bad input never
shows a traceback. Library code raises it wherever the fault is the user's config or flags.
"""


class UserInputError(Exception):
    """Bad user input (config file, CLI flag). The message names the field and allowed values."""
