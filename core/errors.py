"""Exception types whose message is shown to the user as one line (no traceback)."""


class CerebError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, bad config)."""


class ConfigError(CerebError):
    """A configuration key that does not exist, or a value of the wrong type or range."""


class DataError(CerebError):
    """A data file that is missing, truncated, corrupt or inconsistent."""


class CheckpointError(CerebError):
    """A checkpoint that is missing, corrupt, or does not match the requested model."""
