"""The one exception type of the converter."""


class ConvertError(Exception):
    """A checkpoint cannot be converted; the message names the file, key or tensor at fault."""
