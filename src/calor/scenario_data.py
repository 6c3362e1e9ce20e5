"""A scenario's data split, loaded once per process (loading and splitting are deterministic), and the
parts of it that cache keys and records name."""

from __future__ import annotations

from typing import Any

from .artifacts import config_hash
from .config import to_dict
from .data.splits import SplitData, make_splits
from .scenario import Scenario

_DATA: dict[str, SplitData] = {}


def data_key(scenario: Scenario) -> dict[str, Any]:
    """What identifies the scenario's split in every cache key."""
    return {"data": to_dict(scenario.data), "resolution": scenario.resolution}


def load_data(scenario: Scenario) -> SplitData:
    """The scenario's split (memoised in-process)."""
    key = config_hash(data_key(scenario))
    if key not in _DATA:
        _DATA[key] = make_splits(scenario)
    return _DATA[key]


def split_summary(data: SplitData) -> dict[str, Any]:
    """The split's description without the (long) index lists."""
    return {k: v for k, v in data.info.items() if k != "indices"}
