"""Analysis helpers: who is online or notifiable, and attributes as columns.

Both keep "unknown" apart. In :func:`presence_summary` a null presence value
is its own state, never folded into offline or not notifiable. In
:func:`flatten_attributes` a key a user does not have is null in that row,
never a default.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ._errors import ConfigurationError
from ._frame import check_dtype_backend
from ._schema import ATTRIBUTES, DtypeBackend, pandas_dtype

__all__ = [
    "ALL",
    "NOTIFIABLE_STATES",
    "NOT_FETCHED",
    "ONLINE_STATES",
    "flatten_attributes",
    "presence_summary",
]

logger = logging.getLogger(__name__)

#: The state of a user whose fetch failed or never ran: neither true, false nor null.
NOT_FETCHED = "not fetched"
#: States of ``is_online`` in a summary: true, false, null, and never fetched.
ONLINE_STATES = ("online", "offline", "unknown", NOT_FETCHED)
#: States of ``is_notifiable`` in a summary: true, false, null, and never fetched.
NOTIFIABLE_STATES = ("notifiable", "not notifiable", "unknown", NOT_FETCHED)
#: The label of a margin: every state of the other measure together.
ALL = "all"

_UNKNOWN = 2  # the code of a null state
_NOT_FETCHED = 3  # the code of a user whose fetch failed or never ran
_STATES = len(ONLINE_STATES)
#: The attrs of a fill that list users it did not fetch (#5).
_UNFETCHED_ATTRS = ("presence_failed_sids", "presence_unfilled_sids")

#: An attribute's path of keys, outermost first.
KeyPath = tuple[str, ...]
#: Separators suggested when keys collide, in order of preference.
_SEPARATORS = ("/", "__", "::", "|", "->")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT_EXACT = 2**53


def presence_summary(
    frame: pd.DataFrame, *, by: Hashable | Sequence[Hashable] | None = None
) -> pd.DataFrame:
    """Count users by online and notifiable state, with shares, as a tidy frame.

    Each state is ``online``/``offline``/``unknown``/``not fetched`` and
    ``notifiable``/``not notifiable``/``unknown``/``not fetched``. Unknown is
    a null the API reported: it did not say. Not fetched is a user the fill
    did not reach: its fetch failed in lenient mode
    (``attrs["presence_failed_sids"]``) or a failed fill left it
    (``attrs["presence_unfilled_sids"]``); such a user is not fetched in both
    measures, whatever its columns hold. A null in a frame that was never
    filled counts as unknown. One row per pair of states (the
    cross-tabulation), one per state of each measure alone (the other is
    ``"all"``), and the total (``"all"``, ``"all"``): 25 rows, or 25 per
    group of ``by``.

    Args:
        frame: Users with ``is_online`` and ``is_notifiable`` columns (true,
            false or null), as :func:`fill_presence` returns them.
        by: Column name(s) to break the counts down by, such as a flattened
            attribute; users whose value is null form a group of their own.

    Returns:
        Columns ``*by``, ``online``, ``notifiable`` (ordered categoricals,
        ``"all"`` last), ``users`` (int64) and ``share`` (float64, of the
        users of the row's group; NaN for an empty group). ``attrs`` keeps
        ``presence_fetched_at`` when the frame has it.

    Raises:
        ConfigurationError: A column is missing, a presence column holds
            something other than true, false and null, or a ``by`` column
            holds values that cannot be grouped (objects, lists, or the
            decoded ``attributes`` themselves: flatten them first).

    Example:
        >>> summary = presence_summary(users)  # doctest: +SKIP
        >>> summary.query("notifiable == 'all' and online != 'all'")  # doctest: +SKIP
    """
    if not isinstance(frame, pd.DataFrame):
        raise ConfigurationError(
            f"presence_summary expects a DataFrame of users, not "
            f"{type(frame).__name__}; pass the frame fill_presence(frame) or "
            "load_users(..., presence=True) returns"
        )
    keys = _as_list(by)
    missing = [c for c in ("is_online", "is_notifiable") if c not in frame]
    if missing:
        raise ConfigurationError(
            f"presence_summary needs columns {missing}, which the frame lacks; "
            "fill them with fill_presence(frame)"
        )
    _check_by(frame, keys)
    online = _state_codes(frame["is_online"], "is_online")
    notifiable = _state_codes(frame["is_notifiable"], "is_notifiable")
    unfetched = _unfetched(frame)
    online[unfetched] = notifiable[unfetched] = _NOT_FETCHED
    _warn_if_never_fetched(frame, online, notifiable)

    if not keys:
        summary = _summary_rows(online, notifiable)
    else:
        keyed = frame[keys].reset_index(drop=True)  # the index is now positions
        parts = []
        for group, members in keyed.groupby(keys, dropna=False, sort=True):
            rows = members.index.to_numpy()
            part = _summary_rows(online[rows], notifiable[rows])
            values = group if isinstance(group, tuple) else (group,)
            for key, value in zip(reversed(keys), reversed(values), strict=True):
                part.insert(0, key, [value] * len(part))
            parts.append(part)
        summary = pd.concat(parts, ignore_index=True) if parts else _empty(keys)
        for key in keys:
            summary[key] = summary[key].astype(frame[key].dtype)

    if "presence_fetched_at" in frame.attrs:
        summary.attrs["presence_fetched_at"] = frame.attrs["presence_fetched_at"]
    return summary


def flatten_attributes(
    users: pd.DataFrame | pd.Series[Any],
    *,
    sep: str = ".",
    max_depth: int | None = None,
    prefix: str | None = ATTRIBUTES,
    dtype_backend: DtypeBackend = "numpy_nullable",
) -> pd.DataFrame:
    """Spread decoded attributes into one typed column per key path.

    Nested objects give ``team.name``-style paths, joined by ``sep``. A row
    that lacks a key is null in that column; nothing is filled in. A column
    whose values are all booleans, integers, numbers or strings gets the
    matching nullable dtype; lists, objects at the depth limit and mixed
    values stay Python objects. Integers stay exact: they are ``Int64`` when
    every one fits in 64 bits, and integers mixed with fractions are
    ``Float64`` only when every integer is within ±2**53 (where a float holds
    it exactly); otherwise the column keeps the Python values (object).
    Attributes that are not a JSON object (a list, a string, a number, or
    null) give no columns; how many (nulls aside) is logged at INFO.

    Args:
        users: A users frame (its ``attributes`` column is read) or a Series
            of decoded attributes.
        sep: Joins the keys of a path; pick one the keys do not contain.
        max_depth: Levels of nesting to spread; deeper objects are kept whole
            as values. None (the default) spreads every level.
        prefix: Put before every column name (with ``sep``); None for none.
        dtype_backend: ``"numpy_nullable"`` or ``"pyarrow"`` dtypes.

    Returns:
        A frame with the index of ``users``, columns in the order the keys
        first appear, and a copy of the attrs of ``users``: join it to the
        users to group by an attribute, and the join keeps those attrs (pandas
        drops attrs that differ), such as the fill's failed users.

    Raises:
        ConfigurationError: Bad arguments, no ``attributes`` column, or two
            key paths, in one row or in different rows, that ``sep`` joins
            into the same name (such as ``{"a.b": 1}`` and ``{"a": {"b": 2}}``
            with ``sep="."``).

    Example:
        >>> users = pd.DataFrame({"attributes": [{"team": {"name": "Sales"}}, {}]})
        >>> flatten_attributes(users)["attributes.team.name"].tolist()
        ['Sales', <NA>]
    """
    _check_flatten_options(sep, max_depth, prefix)
    check_dtype_backend(dtype_backend)
    values = _attribute_values(users)

    flat: list[dict[KeyPath, Any]] = []
    paths: dict[KeyPath, None] = {}
    non_objects = 0
    for document in values:
        if isinstance(document, dict):
            row = _flatten(document, max_depth)
            paths.update(dict.fromkeys(row))
            flat.append(row)
        else:
            non_objects += document is not None and document is not pd.NA
            flat.append({})

    names = _column_names(list(paths), sep)
    columns = {
        _column_name(name, sep, prefix): _typed_column(
            [row.get(path) for row in flat], values.index, dtype_backend
        )
        for path, name in names.items()
    }
    result = pd.DataFrame(columns, index=values.index)
    # Equal attrs, or users.join(result) drops them: presence_summary would
    # then count the fill's failed users as unknown (#5).
    result.attrs = copy.deepcopy(users.attrs)
    if non_objects:
        logger.info(
            "%d users' attributes are not a JSON object (a list, a string or "
            "a number) and give no columns",
            non_objects,
        )
    return result


def _as_list(by: Hashable | Sequence[Hashable] | None) -> list[Hashable]:
    if by is None:
        return []
    if isinstance(by, str) or not isinstance(by, Sequence):
        return [by]
    return list(by)


def _check_by(frame: pd.DataFrame, keys: list[Hashable]) -> None:
    """Refuse ``by`` columns that are missing or hold values groupby cannot key."""
    for key in keys:
        if not _is_hashable(key):
            # The type only: a Series or a list may hold users' data.
            raise ConfigurationError(
                f"by holds a {type(key).__name__}, which is not a column name; "
                "pass a column's name, or a list of names"
            )
    missing = [key for key in keys if key not in frame.columns]
    if missing:
        raise ConfigurationError(
            f"by names columns {missing}, which the frame lacks; to group by an "
            "attribute, join flatten_attributes(frame) to the frame first"
        )
    flatten = (
        "spread the attributes into columns with frame.join(flatten_attributes("
        "frame)) and group by one of those, such as 'attributes.team.name'"
    )
    for key in keys:
        if key == ATTRIBUTES:
            raise ConfigurationError(
                f"by={key!r} would group by whole JSON documents; {flatten}"
            )
        column = frame[key]
        if column.dtype != object:
            continue
        value = next((v for v in column if not _is_hashable(v)), None)
        if value is not None:
            raise ConfigurationError(
                f"column {key!r} holds {_kind_of(value)}, which cannot be grouped "
                f"by; {flatten}"
            )


def _is_hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _kind_of(value: object) -> str:
    """``"dict values (keys 'plan', 'seats')"``: the shape, never a user's data."""
    kind = f"{type(value).__name__} values"
    if isinstance(value, dict) and value:
        keys = [str(key) for key in list(value)[:3]]
        more = ", ..." if len(value) > 3 else ""
        kind += f" (keys {', '.join(map(repr, keys))}{more})"
    return kind


def _state_codes(column: pd.Series[Any], name: str) -> np.ndarray[Any, Any]:
    """0 for true, 1 for false, 2 for null."""
    try:
        values = column.astype("boolean").array
    except (TypeError, ValueError) as error:
        raise ConfigurationError(
            f"column {name!r} must hold true, false or null, not {column.dtype} "
            f"values ({error})"
        ) from None
    unknown = np.asarray(values.isna())
    true = np.asarray(values.fillna(False), dtype=bool)
    return np.where(unknown, _UNKNOWN, np.where(true, 0, 1))


def _unfetched(frame: pd.DataFrame) -> np.ndarray[Any, Any]:
    """Which rows' users the fill listed as failed or left unfilled."""
    sids = {sid for name in _UNFETCHED_ATTRS for sid in frame.attrs.get(name) or ()}
    if not sids or "sid" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return np.asarray(frame["sid"].isin(sids), dtype=bool)


def _summary_rows(
    online: np.ndarray[Any, Any], notifiable: np.ndarray[Any, Any]
) -> pd.DataFrame:
    grid = np.bincount(online * _STATES + notifiable, minlength=_STATES**2)
    grid = grid.reshape(_STATES, _STATES)
    rows: list[tuple[str, str, int]] = []
    for i, online_state in enumerate(ONLINE_STATES):
        for j, notifiable_state in enumerate(NOTIFIABLE_STATES):
            rows.append((online_state, notifiable_state, int(grid[i, j])))
        rows.append((online_state, ALL, int(grid[i].sum())))
    for j, notifiable_state in enumerate(NOTIFIABLE_STATES):
        rows.append((ALL, notifiable_state, int(grid[:, j].sum())))
    rows.append((ALL, ALL, int(grid.sum())))

    summary = pd.DataFrame(rows, columns=["online", "notifiable", "users"])
    summary["online"] = pd.Categorical(
        summary["online"], categories=[*ONLINE_STATES, ALL], ordered=True
    )
    summary["notifiable"] = pd.Categorical(
        summary["notifiable"], categories=[*NOTIFIABLE_STATES, ALL], ordered=True
    )
    summary["users"] = summary["users"].astype("int64")
    total = int(grid.sum())
    summary["share"] = summary["users"] / total if total else np.nan
    return summary


def _empty(keys: list[Hashable]) -> pd.DataFrame:
    empty = _summary_rows(np.array([], dtype=int), np.array([], dtype=int)).head(0)
    for key in reversed(keys):
        empty.insert(0, key, pd.Series(dtype=object))
    return empty


def _warn_if_never_fetched(
    frame: pd.DataFrame, online: np.ndarray[Any, Any], notifiable: np.ndarray[Any, Any]
) -> None:
    if "presence_fetched_at" in frame.attrs or not len(frame):
        return
    if (online == _UNKNOWN).all() and (notifiable == _UNKNOWN).all():
        logger.warning(
            "every user's presence is unknown and the frame says presence was "
            "never fetched: the list endpoint never reports it; use "
            "fill_presence(frame) or load_users(..., presence=True)"
        )


def _check_flatten_options(sep: object, max_depth: object, prefix: object) -> None:
    if not isinstance(sep, str) or not sep:
        raise ConfigurationError(f"sep={sep!r} must be a non-empty string")
    if max_depth is not None and (
        isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1
    ):
        raise ConfigurationError(
            f"max_depth={max_depth!r} must be an integer >= 1, or None for no limit"
        )
    if prefix is not None and not isinstance(prefix, str):
        raise ConfigurationError(f"prefix={prefix!r} must be a string or None")


def _attribute_values(users: pd.DataFrame | pd.Series[Any]) -> pd.Series[Any]:
    if isinstance(users, pd.Series):
        return users
    if not isinstance(users, pd.DataFrame):
        raise ConfigurationError(
            f"users must be a DataFrame or a Series, not {type(users).__name__}"
        )
    if ATTRIBUTES not in users.columns:
        raise ConfigurationError(
            "the frame has no 'attributes' column; pass users as load_users "
            "returns them, or a Series of decoded attributes"
        )
    return users[ATTRIBUTES]


def _flatten(document: dict[str, Any], max_depth: int | None) -> dict[KeyPath, Any]:
    """Each leaf of ``document`` by its path of keys, down to ``max_depth``."""
    flat: dict[KeyPath, Any] = {}

    def walk(node: dict[str, Any], path: KeyPath) -> None:
        for key, value in node.items():
            here = (*path, str(key))
            deeper = max_depth is None or len(here) < max_depth
            if isinstance(value, dict) and value and deeper:
                walk(value, here)
            else:
                flat[here] = value

    walk(document, ())
    return flat


def _column_names(paths: list[KeyPath], sep: str) -> dict[KeyPath, str]:
    """Join each path with ``sep``; refuse two paths that read the same.

    The paths come from every row, so ``{"a.b": 1}`` in one row and
    ``{"a": {"b": 2}}`` in another collide as surely as within one row.
    """
    names: dict[KeyPath, str] = {}
    owners: dict[str, KeyPath] = {}
    for path in paths:
        name = sep.join(path)
        other = owners.setdefault(name, path)
        if other != path:
            raise ConfigurationError(
                f"attribute keys {list(other)} and {list(path)} both become "
                f"column {name!r} when joined with sep={sep!r}; "
                f"{_separator_advice(paths)}"
            )
        names[path] = name
    return names


def _separator_advice(paths: list[KeyPath]) -> str:
    keys = {key for path in paths for key in path}
    for candidate in _SEPARATORS:
        if not any(candidate in key for key in keys):
            return f"pass a separator no key contains, such as sep={candidate!r}"
    return "pass a separator no key contains"


def _column_name(name: str, sep: str, prefix: str | None) -> str:
    return f"{prefix}{sep}{name}" if prefix else name


def _typed_column(
    values: list[Any], index: pd.Index[Any], backend: DtypeBackend
) -> pd.Series[Any]:
    arrow_type = _common_type([value for value in values if value is not None])
    if arrow_type is None:
        return pd.Series(values, index=index, dtype=object)
    dtype: Any = pandas_dtype(arrow_type, backend)
    try:
        array = pd.array(values, dtype=dtype)
    except (OverflowError, TypeError, ValueError, pa.ArrowInvalid):
        return pd.Series(values, index=index, dtype=object)  # e.g. beyond int64
    return pd.Series(array, index=index)


def _common_type(present: list[Any]) -> pa.DataType | None:
    """The Arrow type all these JSON values share, or None to keep objects."""
    if not present:
        return None
    kinds = {type(value) for value in present}
    if kinds == {bool}:
        return pa.bool_()
    if kinds == {int}:
        fits = all(_INT64_MIN <= value <= _INT64_MAX for value in present)
        return pa.int64() if fits else None
    if kinds <= {int, float}:
        # A float holds every integer up to 2**53 exactly, and not all beyond.
        exact = all(
            abs(value) <= _FLOAT_EXACT for value in present if type(value) is int
        )
        return pa.float64() if exact else None
    if kinds == {str}:
        return pa.string()
    return None
