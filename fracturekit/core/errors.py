"""The one exception type that reaches the user as a single sentence instead of a traceback."""


class UserError(Exception):
    """Bad input from the user (path, format, option): the message names the file and the fix."""
