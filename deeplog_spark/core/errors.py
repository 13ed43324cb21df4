"""The errors every layer may raise, in one module without Spark or torch imports.

``InputError`` and ``ConfigError`` end a job with one ``error:`` line and exit code 2 (see
:mod:`deeplog_spark.cli`); ``CheckpointError`` is an ``InputError`` about a model file.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config key or command-line option is unknown, missing, of the wrong type or out of range."""


class InputError(ValueError):
    """An input cannot be used at all: a missing or empty file, wrong columns, a stage run out of
    order, a model that does not fit the data."""


class CheckpointError(InputError):
    """A checkpoint file is missing, corrupted, tampered with or not a deeplog-spark model."""
