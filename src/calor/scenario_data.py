"""A scenario's data split, loaded once per process (loading and splitting are deterministic), and the
parts of it that cache keys and records name."""

from __future__ import annotations

import os
from typing import Any

from .artifacts import config_hash
from .config import to_dict
from .data.decode import DATA_ROOT_ENV
from .data.identity_split import SPLIT_DIR_ENV
from .data.splits import SplitData, make_splits
from .scenario import Scenario

_DATA: dict[str, SplitData] = {}
# Sources whose content is fixed by the installed package: their scenario settings identify the data.
EMBEDDED_SOURCES = ("mnist-embedded",)


def data_key(scenario: Scenario) -> dict[str, Any]:
    """What identifies the scenario's split in every cache key: its settings and, for data read from the
    user's files, a digest of what was read (the split file's checksum and the decoded pixels, or the
    images' and labels' digest),
    so that artifacts made from one copy of a dataset are never reused for another copy at the same path."""
    key: dict[str, Any] = {"data": to_dict(scenario.data), "resolution": scenario.resolution}
    if scenario.data.source not in EMBEDDED_SOURCES:
        info = load_data(scenario).info
        key["data_content"] = (f"{info['split_checksum'][:32]}/{info['pixels_sha256']}" if "split_checksum" in info
                               else info.get("source_sha256"))
    return key


def load_data(scenario: Scenario) -> SplitData:
    """The scenario's split (memoised in-process, per data root: relative paths resolve against it)."""
    where = {k: os.environ.get(k, "") for k in (DATA_ROOT_ENV, SPLIT_DIR_ENV)}
    key = config_hash({"data": to_dict(scenario.data), "resolution": scenario.resolution, "where": where})
    if key not in _DATA:
        _DATA[key] = make_splits(scenario)
    return _DATA[key]


def split_summary(data: SplitData) -> dict[str, Any]:
    """The split's description without the (long) index lists."""
    return {k: v for k, v in data.info.items() if k != "indices"}
