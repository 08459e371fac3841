"""Errors that mean "the user asked for something we cannot do" (exit code 2 at the CLI)."""


class HypLoraUserError(ValueError):
    """Bad input: unknown model, task or option, malformed data, impossible configuration.

    The command-line interface turns it into a one-line message on stderr and exit code 2.
    It subclasses ValueError so library users can catch it the usual way.
    """
