"""The one exception type the CLI turns into a single clear line and exit status 2."""


class UserError(Exception):
    """Bad input from the user: say what is wrong and what to do, no traceback."""
