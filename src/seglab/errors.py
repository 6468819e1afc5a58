"""Errors that the CLI turns into one line, without a traceback."""


class SeglabError(Exception):
    """A user-facing problem: bad input file, config key, checkpoint or argument."""


class ConfigError(SeglabError):
    """A config key with a wrong name, type or value; the message starts with its dotted path."""


class DataError(SeglabError):
    """An image, mask, palette or split that cannot be used; the message names the file."""


class CheckpointError(SeglabError):
    """A file that is not a usable seglab checkpoint."""


def brief(text: object, limit: int = 120) -> str:
    """The first line of an error text, cut at a word boundary to about `limit` characters."""
    lines = str(text).strip().splitlines()
    first = lines[0].strip() if lines else ""
    if len(first) <= limit:
        return first
    cut = first[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return (cut if len(cut) > limit // 2 else first[:limit]) + " ..."
