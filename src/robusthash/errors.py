"""The one exception type for user mistakes: the CLI prints its message on one line and exits with code 2."""


class UserError(Exception):
    """A mistake in what the user asked for (bad name, bad value, missing or corrupt file).

    The message names what is wrong and, where there is a fixed set, what is valid.
    """
