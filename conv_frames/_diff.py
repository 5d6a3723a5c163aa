"""Change detection: which users were added, removed or changed between two frames.

Users are matched by SID. A user present on both sides has changed when any
compared field's value differs; how a value is written does not count:

- Nulls equal nulls, whatever their spelling (None, NaN, NaT, ``pd.NA``).
- Timestamps compare as instants: the same moment in UTC and in Europe/Paris,
  or in microseconds and nanoseconds, is no change. A timestamp without a
  zone is read as UTC, as the loader reads the API's.
- Decoded ``attributes`` (and any column of Python objects) compare as JSON
  values: key order and spacing aside, and numbers by value, since JSON has
  one number type: ``1`` and ``1.0`` are the same number, whichever a client
  that rewrote the attributes chose. ``true`` and ``1``, or ``"1"`` and ``1``,
  still differ. Numeric columns compare alike: ``Int64`` 1 equals ``Float64`` 1.0.

Columns present on one side only are a schema change: they are reported, not
compared. A SID repeated within one side (exports keep duplicates as the API
sent them) is compared by its last row, as a later page would overwrite an
earlier one; the duplicate rows are counted per side and warned about once.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from ._errors import ConfigurationError, SchemaError
from ._schema import pandas_dtype
from ._snapshots import read_snapshot

__all__ = [
    "CHANGE_KINDS",
    "DERIVED_COLUMNS",
    "UsersDiff",
    "diff_snapshots",
    "diff_users",
]

#: Values of the ``change`` column, in the order the rows are sorted.
CHANGE_KINDS = ("added", "removed", "changed")

#: Not compared unless asked for: both are built from the user's SID and the
#: path the list was read from (``/v1/Users`` or ``/v1/Services/{sid}/Users``),
#: so they say nothing about the user.
DERIVED_COLUMNS = ("url", "links")

logger = logging.getLogger(__name__)

_KEY = "sid"
#: Floats below this hold every integer exactly.
_EXACT_FLOAT_INTS = 2.0**53
#: How a float shows in JSON text (strings may match too; that only costs time).
_FLOAT_TEXT = re.compile(r"\d[.eE]")


@dataclass(frozen=True)
class UsersDiff:
    """The users added, removed and changed from ``old`` to ``new``.

    Attributes:
        changes: One row per added, removed or changed user: ``sid``,
            ``identity`` (the new one, or the old one of a removed user),
            ``change`` (``added``, ``removed`` or ``changed``) and
            ``changed_fields`` (a list of column names, empty unless changed).
        added: Users only in ``new``.
        removed: Users only in ``old``.
        changed: Users in both whose compared fields differ.
        unchanged: Users in both whose compared fields are equal.
        field_counts: For each column, how many changed users it changed in.
        columns_added: Columns only ``new`` has (not compared).
        columns_removed: Columns only ``old`` has (not compared).
        old_label: What ``old`` was (a snapshot key), for the summary.
        new_label: What ``new`` was.
        old_duplicates: Rows of ``old`` that repeat an earlier row's SID
            (only the last row of a SID is compared).
        new_duplicates: The same for ``new``.
    """

    changes: pd.DataFrame
    added: int
    removed: int
    changed: int
    unchanged: int
    field_counts: Mapping[str, int] = field(default_factory=dict)
    columns_added: tuple[str, ...] = ()
    columns_removed: tuple[str, ...] = ()
    old_label: str | None = None
    new_label: str | None = None
    old_duplicates: int = 0
    new_duplicates: int = 0

    @property
    def summary(self) -> str:
        """One line: the counts, the fields that changed, and column changes."""
        fields = ", ".join(
            f"{name} {count}" for name, count in self.field_counts.items()
        )
        text = (
            f"{self.added} added, {self.removed} removed, {self.changed} changed"
            + (f" ({fields})" if fields else "")
            + f", {self.unchanged} unchanged"
        )
        if self.old_label or self.new_label:
            text = f"{self.old_label or 'frame'} -> {self.new_label or 'frame'}: {text}"
        if self.columns_added:
            text += f"; columns added: {', '.join(self.columns_added)}"
        if self.columns_removed:
            text += f"; columns removed: {', '.join(self.columns_removed)}"
        if self.old_duplicates or self.new_duplicates:
            text += (
                f"; duplicate SID rows (last compared): {self.old_duplicates} old, "
                f"{self.new_duplicates} new"
            )
        return text

    @property
    def has_changes(self) -> bool:
        """Whether any user or column was added, removed or changed."""
        return bool(
            self.added
            or self.removed
            or self.changed
            or self.columns_added
            or self.columns_removed
        )

    def __str__(self) -> str:
        return self.summary


def diff_users(
    old: pd.DataFrame,
    new: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
) -> UsersDiff:
    """Compare two users frames (snapshots, or a snapshot and a fresh load).

    Args:
        old: The earlier users, as :func:`load_users` or :func:`read_snapshot`
            returns them (either ``dtype_backend``).
        new: The later users.
        columns: The fields to compare; by default every column both frames
            have except ``sid`` and :data:`DERIVED_COLUMNS`.

    Returns:
        The changes as a DataFrame, with counts and a one-line ``summary``.
        ``attrs["snapshot"]`` of each frame, when present, labels the summary.
        A SID repeated within a frame is compared by its last row; the
        duplicate rows of each side are counted in ``old_duplicates`` and
        ``new_duplicates``, in ``changes.attrs["duplicate_sids"]`` and in the
        summary, with one WARNING.

    Raises:
        SchemaError: A frame lacks ``sid``, or has a user without one.
        ConfigurationError: ``columns`` names a column a frame lacks.

    Example:
        >>> diff = diff_users(read_snapshot(root, sid, "previous"),  # doctest: +SKIP
        ...                   read_snapshot(root, sid))
        >>> print(diff.summary)  # doctest: +SKIP
        2 added, 0 removed, 1 changed (attributes 1), 997 unchanged
    """
    (before, old_duplicates), (after, new_duplicates) = (
        _indexed(old, "old"),
        _indexed(new, "new"),
    )
    if old_duplicates or new_duplicates:
        logger.warning(
            "repeated SIDs: comparing the last row of each (%d duplicate rows in the "
            "old frame, %d in the new)",
            old_duplicates,
            new_duplicates,
        )
    compared = _compared_columns(before, after, columns)
    added = after.index.difference(before.index, sort=False)
    removed = before.index.difference(after.index, sort=False)
    common = after.index.intersection(before.index, sort=False)

    differs = _difference_matrix(before, after, common, compared)
    rows_changed = np.asarray(differs.any(axis=1), dtype=bool)

    changes = _changes_frame(before, after, added, removed, common, rows_changed)
    changed_fields = [
        [compared[j] for j in np.flatnonzero(row)] for row in differs[rows_changed]
    ]
    unchanged_fields: list[list[str]] = [[] for _ in range(len(added) + len(removed))]
    changes["changed_fields"] = unchanged_fields + changed_fields
    changes.attrs["duplicate_sids"] = {"old": old_duplicates, "new": new_duplicates}
    counts = {
        name: int(differs[:, j].sum())
        for j, name in enumerate(compared)
        if differs[:, j].any()
    }
    return UsersDiff(
        changes=changes,
        added=len(added),
        removed=len(removed),
        changed=int(rows_changed.sum()),
        unchanged=int((~rows_changed).sum()),
        field_counts=dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))),
        columns_added=tuple(c for c in new.columns if c not in old.columns),
        columns_removed=tuple(c for c in old.columns if c not in new.columns),
        old_label=old.attrs.get("snapshot"),
        new_label=new.attrs.get("snapshot"),
        old_duplicates=old_duplicates,
        new_duplicates=new_duplicates,
    )


def diff_snapshots(
    root: str | os.PathLike[str],
    service_sid: str | None = None,
    old: str = "previous",
    new: str | pd.DataFrame = "latest",
    *,
    columns: Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> UsersDiff:
    """Compare two published snapshots of a service, or one with a frame.

    Args:
        root: The dataset folder or fsspec URL.
        service_sid: The service; may be omitted when the dataset holds one.
        old: The earlier snapshot: ``"previous"``, ``"latest"`` or a key.
        new: The later snapshot (``"latest"`` or a key), or a users frame
            such as a fresh :func:`load_users`.
        columns: See :func:`diff_users`.
        storage_options: Options for the fsspec filesystem.

    Raises:
        SnapshotError: A snapshot is missing or fails its checksums.
    """
    before = read_snapshot(root, service_sid, old, storage_options=storage_options)
    if isinstance(new, str):
        new = read_snapshot(root, service_sid, new, storage_options=storage_options)
    return diff_users(before, new, columns=columns)


def _difference_matrix(
    before: pd.DataFrame, after: pd.DataFrame, common: pd.Index, compared: list[str]
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Row per common user, column per compared field: True where it differs."""
    differs = np.zeros((len(common), len(compared)), dtype=bool)
    for position, name in enumerate(compared):
        differs[:, position] = _differs(
            before[name].reindex(common), after[name].reindex(common)
        )
    return differs


def _indexed(frame: pd.DataFrame, side: str) -> tuple[pd.DataFrame, int]:
    """The frame indexed by SID, the last row of each; and how many rows repeat one."""
    if _KEY not in frame.columns:
        raise SchemaError(f"the {side} frame has no {_KEY!r} column to match users by")
    sids = frame[_KEY]
    if sids.isna().any():
        raise SchemaError(f"the {side} frame has users without a {_KEY!r}")
    repeated = sids.duplicated(keep="last").to_numpy()
    duplicates = int(repeated.sum())
    if duplicates:
        frame = frame[~repeated]
    indexed = frame.set_index(frame[_KEY].astype("string").rename(None), drop=False)
    return indexed, duplicates


def _compared_columns(
    before: pd.DataFrame, after: pd.DataFrame, columns: Sequence[str] | None
) -> list[str]:
    if columns is None:
        skipped = {_KEY, *DERIVED_COLUMNS}
        return [c for c in after.columns if c in before.columns and c not in skipped]
    missing = [c for c in columns if c not in before.columns or c not in after.columns]
    if missing:
        raise ConfigurationError(
            f"columns {missing} are not in both frames; compare some of "
            f"{sorted(set(before.columns) & set(after.columns))}"
        )
    return list(dict.fromkeys(columns))


def _changes_frame(
    before: pd.DataFrame,
    after: pd.DataFrame,
    added: pd.Index,
    removed: pd.Index,
    common: pd.Index,
    rows_changed: np.ndarray[Any, np.dtype[np.bool_]],
) -> pd.DataFrame:
    changed = common[rows_changed]
    sids = [*added, *removed, *changed]
    identities = [
        *_column(after, "identity", added),
        *_column(before, "identity", removed),
        *_column(after, "identity", changed),
    ]
    kinds = ["added"] * len(added) + ["removed"] * len(removed)
    kinds += ["changed"] * len(changed)
    return pd.DataFrame(
        {
            "sid": pd.array(sids, dtype="string"),
            "identity": pd.array(identities, dtype="string"),
            "change": pd.Categorical(kinds, categories=CHANGE_KINDS),
        }
    )


def _column(frame: pd.DataFrame, name: str, index: pd.Index) -> list[Any]:
    if name not in frame.columns:
        return [None] * len(index)
    return [None if pd.isna(v) else v for v in frame[name].reindex(index)]


def _differs(old: pd.Series, new: pd.Series) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Whether each pair of values differs; two nulls are equal."""
    old, new = _comparable(old), _comparable(new)
    if _kind(old.dtype) != _kind(new.dtype):
        old, new = _as_json(old), _as_json(new)
    both_null = old.isna().to_numpy() & new.isna().to_numpy()
    try:
        equal = (old == new).fillna(False).to_numpy(dtype=bool)
    except TypeError:
        equal = (_as_json(old) == _as_json(new)).fillna(False).to_numpy(dtype=bool)
    return np.asarray(~(equal | both_null), dtype=bool)


def _comparable(series: pd.Series) -> pd.Series:
    """One dtype per kind of value, so that both backends compare alike."""
    dtype = series.dtype
    if isinstance(dtype, pd.ArrowDtype):
        arrow_type = dtype.pyarrow_dtype
        if pa.types.is_map(arrow_type):  # (key, value) pairs as Python sees them
            pairs = [None if _is_null(v) else dict(v) for v in series]
            return _as_json(pd.Series(pairs, index=series.index, dtype=object))
        if pa.types.is_timestamp(arrow_type) and arrow_type.tz is None:
            return _in_utc(series.astype(np.dtype(f"datetime64[{arrow_type.unit}]")))
        target = pandas_dtype(arrow_type, "numpy_nullable")
        if target is object:
            return _as_json(series)
        # pandas-stubs do not accept the dtype objects pandas_dtype returns.
        converted: pd.Series = series.astype(target)  # type: ignore[call-overload]
        return _comparable(converted)
    if dtype == np.dtype(object):
        return _as_json(series)
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return _in_utc(series)
    return series


def _in_utc(series: pd.Series) -> pd.Series:
    """Timestamps as UTC instants; those without a zone are taken to be UTC."""
    if series.dt.tz is None:
        localized: pd.Series = series.dt.tz_localize("UTC")
        return localized
    converted: pd.Series = series.dt.tz_convert("UTC")
    return converted


def _kind(dtype: Any) -> Any:
    """What values of ``dtype`` compare with: others of the same kind, with ``==``.

    Timestamps (all in UTC by now) compare as instants whatever their unit,
    and numbers by value whatever their width; booleans are not numbers here,
    as in JSON. Other dtypes compare only with themselves.
    """
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "instant"
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return "number"
    return dtype


def _as_json(series: pd.Series) -> pd.Series:
    """Values as canonical JSON text (sorted keys); nulls stay null."""
    return pd.Series(
        [_canonical(value) for value in series], index=series.index, dtype="string"
    )


def _canonical(value: Any) -> str | None:
    if _is_null(value):
        return None
    if isinstance(value, Mapping):
        value = dict(value)
    text = _dumps(value)
    if _FLOAT_TEXT.search(text):  # perhaps a float such as 1.0 or 1e+20
        text = _dumps(_whole_floats_as_ints(value))
    return text


def _dumps(value: Any) -> str:
    return orjson.dumps(
        value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str
    ).decode()


def _whole_floats_as_ints(value: Any) -> Any:
    """The value with each whole float as an int: JSON's 1.0 and 1 are one number.

    Only floats that hold their integer exactly (below 2**53) are changed.
    """
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _EXACT_FLOAT_INTS:
            return int(value)
        return value
    if isinstance(value, Mapping):
        return {key: _whole_floats_as_ints(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_whole_floats_as_ints(item) for item in value]
    return value


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)
