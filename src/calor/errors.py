"""Typed errors. Each says what is wrong, where, and how to fix it; the CLI turns them into exit code 2."""

from __future__ import annotations


class CalorError(Exception):
    """Base class of every error calor raises on purpose (bad input, missing file, bad config)."""


class ConfigError(CalorError, ValueError):
    """A configuration value (scenario, defense or attack hyper-parameter) is invalid."""


class DataError(CalorError):
    """A dataset is missing, unreadable or has the wrong shape."""


class ArtifactError(CalorError):
    """An artifact directory is missing, incomplete or corrupt."""


class MetricError(CalorError):
    """A metric could not be computed. Never replaced by a default value."""


class TrainingError(CalorError):
    """Training diverged (non-finite loss): usually a learning rate or loss weight that is too large."""


class ThreatModelError(CalorError, PermissionError):
    """An attack asked an oracle for more access than its threat model grants."""


def collect(problems: list[str], what: str) -> None:
    """Raise one ConfigError listing every problem found in `what`, if there are any."""
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"invalid {what}:\n{lines}")
