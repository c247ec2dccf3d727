"""The privfl exception family.

Every error a user can cause (a bad config value, a missing data folder, an impossible
combination of stages) is a :class:`PrivflError`; the CLI prints it on one line and exits 2.
Anything else escaping privfl is a bug (exit 1).
"""

from __future__ import annotations


class PrivflError(ValueError):
    """Base class of the errors a user can cause and fix."""


class ConfigError(PrivflError):
    """A config value is missing, unknown or out of range; the message names the field."""


class DataError(PrivflError):
    """A data set is missing, malformed, or fails its checksum."""


class IntegrityError(DataError):
    """A downloaded file does not match its published SHA-256 digest."""


class RunFolderError(PrivflError):
    """The run folder cannot be created, resumed or overwritten as asked."""


class AggregationError(PrivflError):
    """A round cannot be aggregated (e.g. too few surviving clients); no model update is made."""


__all__ = [
    "AggregationError",
    "ConfigError",
    "DataError",
    "IntegrityError",
    "PrivflError",
    "RunFolderError",
]
