"""User-facing errors: one line that names the problem and the fix.

Anything raised as :class:`CgTrainError` is printed by the CLI as a single
``cg-train: error: ...`` line (no traceback) and exits with status 2.
"""


class CgTrainError(Exception):
    """A problem with the user's input (config, data, paths), not a bug."""


class ConfigError(CgTrainError):
    """A config key is unknown, mistyped or out of range. The message names the key."""


class DataError(CgTrainError):
    """The dataset on disk is missing, empty or not in the expected layout."""
