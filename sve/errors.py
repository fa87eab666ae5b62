"""Exceptions that `sve` raises for bad input. Each message names the problem and the fix."""

from __future__ import annotations


class SVEError(Exception):
    """Base class of the errors `sve` raises on purpose (never a raw traceback from torch)."""


class ConfigError(SVEError, ValueError):
    """An argument or config field has an invalid value; the message lists the allowed values."""


class UnknownNameError(SVEError, KeyError):
    """A backbone, dataset, method or corruption name is not known; the message lists valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingAssetError(SVEError, ImportError):
    """An optional asset (weights, dataset package) is not installed; the message gives the command."""


class DataError(SVEError, ValueError):
    """Input data is unusable (no readable images, missing CSV columns, wrong shape or dtype)."""


class TrainingError(SVEError, RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message names the step."""
