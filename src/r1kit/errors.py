"""The one exception type for mistakes a user can fix (bad recipe, missing file, bad value).

The CLI prints these as one clear message and exits non-zero; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input: the message says what is wrong, where, and what is allowed."""
