"""The one exception type users see: bad input, named, in one line."""


class NeurotextError(ValueError):
    """Bad input or an unusable model/store. The CLI prints its message on one line and exits 2."""
