"""Errors that the CLI turns into one line, without a traceback."""


class SeglabError(Exception):
    """A user-facing problem: bad input file, config key, checkpoint or argument."""


class ConfigError(SeglabError):
    """A config key with a wrong name, type or value; the message starts with its dotted path."""


class DataError(SeglabError):
    """An image, mask, palette or split that cannot be used; the message names the file."""


class CheckpointError(SeglabError):
    """A file that is not a usable seglab checkpoint."""
