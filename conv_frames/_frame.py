"""Normalization: raw user records to a typed Arrow batch, then to pandas.

A page of records becomes a :class:`UserBatch`: an Arrow table in
``USERS_SCHEMA`` (``attributes`` kept as the original JSON text, which is what
Parquet stores) plus the decoded ``attributes`` values, decoded once here and
reused by the DataFrame so no row is parsed twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from operator import itemgetter
from typing import Any, Literal, NamedTuple

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._errors import ConfigurationError, SchemaError
from ._schema import (
    ATTRIBUTES,
    BOOLEAN_COLUMNS,
    COLUMNS,
    INVALID_ATTRIBUTES_TEXT,
    JSON_TEXT,
    LINKS,
    LINKS_TYPE,
    STRING_COLUMNS,
    TIMESTAMP,
    TIMESTAMP_COLUMNS,
    USERS_SCHEMA,
    DtypeBackend,
    pandas_dtype,
)

__all__ = [
    "BatchCollector",
    "InvalidAttributes",
    "UserBatch",
    "concat_batches",
    "normalize_records",
    "users_frame",
]

logger = logging.getLogger(__name__)

InvalidAttributes = Literal["raise", "null"]

_KNOWN = frozenset(COLUMNS)
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError)

#: The known fields in the order the one-pass path reads them: the text fields,
#: with the two dates last so that one cast types both, then the flags, then links.
_TEXT_FIELDS = (*STRING_COLUMNS, ATTRIBUTES, *TIMESTAMP_COLUMNS)
_READ_ORDER = (*_TEXT_FIELDS, *BOOLEAN_COLUMNS, LINKS)
_read_known = itemgetter(*_READ_ORDER)
_ATTRIBUTES_READ_AT = _READ_ORDER.index(ATTRIBUTES)
_DICT_OR_NULL = frozenset({dict, type(None)})


class _KnownValues(NamedTuple):
    """A page's values of each known field, one tuple a field, in ``_READ_ORDER``."""

    columns: list[tuple[Any, ...]]
    #: Every record has exactly the known fields: none missing, none unknown.
    exact: bool


@dataclass
class UserBatch:
    """One normalized page: the Arrow table and the decoded attributes.

    Attributes:
        table: The records in ``USERS_SCHEMA``, plus any unknown fields after it.
        attributes: The decoded ``attributes`` value of each row.
        invalid_attributes: Rows whose attributes text was not JSON (lenient mode).
    """

    table: pa.Table
    attributes: list[Any] = field(default_factory=list)
    invalid_attributes: int = 0

    @property
    def num_rows(self) -> int:
        """Number of users in the batch."""
        return int(self.table.num_rows)


class BatchCollector:
    """Keeps a load's normalized pages for its frame, merged into large batches.

    Kept as they come, 2,000 tables of 50 rows cost about as much memory again
    in per-buffer overhead, and pandas converts them chunk by chunk (#4). So
    pages in the plain users schema are merged, every ``merge_rows`` rows, into
    one batch with contiguous columns. A page that is not plain (an unknown
    field, attributes kept as text) stays a batch of its own, in order, so
    :func:`concat_batches` unifies the lot exactly as it would the pages.
    """

    def __init__(self, merge_rows: int = 4096) -> None:
        self.merge_rows = merge_rows
        self._batches: list[UserBatch] = []
        self._plain: list[UserBatch] = []
        self._plain_rows = 0

    def append(self, batch: UserBatch) -> None:
        """Keep one page's batch, after those kept before."""
        if not batch.table.schema.equals(USERS_SCHEMA):
            self._merge()
            self._batches.append(batch)
            return
        self._plain.append(batch)
        self._plain_rows += batch.num_rows
        if self._plain_rows >= self.merge_rows:
            self._merge()

    def batches(self) -> list[UserBatch]:
        """Every row kept so far, as batches in page order."""
        self._merge()
        return list(self._batches)

    def _merge(self) -> None:
        plain, self._plain, self._plain_rows = self._plain, [], 0
        if len(plain) == 1:
            self._batches.append(plain[0])
        elif plain:
            table = pa.concat_tables([batch.table for batch in plain])
            attributes = [value for batch in plain for value in batch.attributes]
            self._batches.append(UserBatch(table.combine_chunks(), attributes))


def normalize_records(
    records: Sequence[Mapping[str, Any]],
    *,
    invalid_attributes: InvalidAttributes = "raise",
) -> UserBatch:
    """Type one page of raw user records.

    Args:
        records: User objects as the API sent them (decoded JSON).
        invalid_attributes: ``"raise"`` (default) makes attributes text that is
            not JSON a :class:`SchemaError`; ``"null"`` loads the row anyway with
            a null decoded value, keeps the text and counts the row.

    Raises:
        SchemaError: A record is not an object, or a value has the wrong type.
        ConfigurationError: ``invalid_attributes`` is not ``"raise"`` or ``"null"``.
    """
    check_invalid_attributes(invalid_attributes)
    _check_records(records)
    known = _known_values(records)
    arrays = (known and _columns_in_one_pass(known)) or _columns_one_by_one(records)
    position = COLUMNS.index(ATTRIBUTES)
    decoded, invalid = _decode_attributes(
        arrays[position], records, invalid_attributes, known
    )
    if invalid:
        arrays[position], kept = _set_aside_invalid_text(arrays[position], invalid)

    table = pa.Table.from_arrays(arrays, schema=USERS_SCHEMA)
    unknown = [] if known and known.exact else _unknown_fields(records)
    for name in unknown:
        table = table.append_column(name, _loose_column([r.get(name) for r in records]))
    if invalid:
        table = table.append_column(INVALID_ATTRIBUTES_TEXT, kept)
    return UserBatch(table, decoded, len(invalid))


def _set_aside_invalid_text(
    column: pa.Array, invalid: set[int]
) -> tuple[pa.Array, pa.Array]:
    """Null the attributes that are not JSON; return their text as a column beside.

    ``attributes`` stays JSON-typed in every file, so that a reader of many
    files (DuckDB over a dataset) sees one type: text labelled JSON that is
    not JSON makes it refuse them all (#6).
    """
    texts = column.storage.to_pylist()
    valid = [None if row in invalid else text for row, text in enumerate(texts)]
    kept = [text if row in invalid else None for row, text in enumerate(texts)]
    return pa.array(valid, JSON_TEXT), pa.array(kept, pa.string())


def users_frame(
    records: Iterable[Mapping[str, Any]],
    *,
    dtype_backend: DtypeBackend = "numpy_nullable",
    invalid_attributes: InvalidAttributes = "raise",
) -> pd.DataFrame:
    """Normalize records the caller already has into a typed users DataFrame.

    Args:
        records: User objects as the API sends them.
        dtype_backend: ``"numpy_nullable"`` (pandas extension dtypes) or
            ``"pyarrow"`` (``pd.ArrowDtype`` columns).
        invalid_attributes: See :func:`normalize_records`.

    Example:
        >>> frame = users_frame([{"sid": "US" + "0" * 32, "attributes": "{}"}])
        >>> str(frame.dtypes["sid"]), frame.loc[0, "attributes"]
        ('string', {})
    """
    check_dtype_backend(dtype_backend)
    if isinstance(records, Mapping | str | bytes) or not isinstance(records, Iterable):
        raise ConfigurationError(
            "records must be a list (or another iterable) of user dicts, not "
            f"{type(records).__name__}"
        )
    batch = normalize_records(list(records), invalid_attributes=invalid_attributes)
    frame = batches_to_frame([batch], dtype_backend=dtype_backend)
    frame.attrs["invalid_attributes"] = batch.invalid_attributes
    frame.attrs["duplicate_sids"] = count_duplicate_sids(batch.table["sid"])
    return frame


def batches_to_frame(
    batches: Sequence[UserBatch], *, dtype_backend: DtypeBackend = "numpy_nullable"
) -> pd.DataFrame:
    """Concatenate normalized batches into one DataFrame with the schema's dtypes."""
    check_dtype_backend(dtype_backend)
    attributes = [value for batch in batches for value in batch.attributes]
    return table_to_frame(
        concat_batches(batches), attributes, dtype_backend=dtype_backend
    )


def concat_batches(batches: Sequence[UserBatch]) -> pa.Table:
    """Concatenate the batches' tables; the empty users table when there are none."""
    tables = [batch.table for batch in batches] or [USERS_SCHEMA.empty_table()]
    return pa.concat_tables(unify_tables(tables), promote_options="permissive")


def unify_tables(tables: list[pa.Table]) -> list[pa.Table]:
    """Make pages' tables concatenable where their column types differ.

    ``attributes`` becomes plain text everywhere once any page holds text that
    is not JSON (lenient mode). An unknown field whose type differs between
    pages (a number on one, text on another) becomes JSON text in all of them,
    as it would within a page. Missing columns are left to Arrow's promotion.
    """
    if any(t.schema.field(ATTRIBUTES).type != JSON_TEXT for t in tables):
        tables = [_attributes_as_text(table) for table in tables]
    return _unknown_fields_as_json_text(tables)


def _attributes_as_text(table: pa.Table) -> pa.Table:
    position = table.schema.get_field_index(ATTRIBUTES)
    return table.set_column(
        position, ATTRIBUTES, table.column(position).cast(pa.string())
    )


def table_to_frame(
    table: pa.Table, attributes: list[Any], *, dtype_backend: DtypeBackend
) -> pd.DataFrame:
    """Convert a users table to pandas, putting in the decoded attributes."""
    columns: dict[str, pd.Series[Any]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if name == ATTRIBUTES:
            columns[name] = pd.Series(attributes, dtype=object, name=name)
        else:
            columns[name] = _column_to_pandas(column, dtype_backend)
    return pd.DataFrame(columns, columns=table.column_names)


def count_duplicate_sids(sids: pa.Array | pa.ChunkedArray) -> int:
    """Count rows whose SID already appeared earlier, and warn when there are any.

    The SIDs are sorted and each compared with the one before: at 300,000
    users that takes a tenth of the time and memory of Arrow's hash-based
    ``count_distinct`` (#4). Nulls sort last and compare as null, never equal.
    """
    ordered = pc.take(sids, pc.sort_indices(sids))
    repeats = pc.sum(pc.equal(ordered[1:], ordered[:-1])).as_py()
    duplicates = int(repeats or 0)
    if duplicates:
        logger.warning(
            "%d rows repeat a user SID seen earlier; they are kept as the API sent "
            "them (see frame.attrs['duplicate_sids'])",
            duplicates,
        )
    return duplicates


def check_invalid_attributes(invalid_attributes: str) -> None:
    """Refuse an ``invalid_attributes`` mode other than ``"raise"`` or ``"null"``."""
    if invalid_attributes not in ("raise", "null"):
        raise ConfigurationError(
            f"invalid_attributes={invalid_attributes!r} is not supported; "
            "use 'raise' or 'null'"
        )


def check_dtype_backend(dtype_backend: str) -> None:
    """Refuse a backend name pandas does not know, before any request is sent."""
    if dtype_backend not in ("numpy_nullable", "pyarrow"):
        raise ConfigurationError(
            f"dtype_backend={dtype_backend!r} is not supported; "
            "use 'numpy_nullable' or 'pyarrow'"
        )


def decode_attribute_text(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    """Decode a column of attributes text; null or non-JSON text gives None."""
    # As plain strings: an extension array's to_pylist makes a scalar a row.
    texts = column.cast(pa.string()).to_pylist()
    try:
        return [None if text is None else orjson.loads(text) for text in texts]
    except orjson.JSONDecodeError:
        return [_decoded_or_none(text) for text in texts]


def _decoded_or_none(text: str | None) -> Any:
    try:
        return None if text is None else orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _check_records(records: Sequence[Any]) -> None:
    if set(map(type, records)) <= {dict}:
        return
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise SchemaError(
                f"user record {index} is a JSON {_json_kind(record)}, not an object"
            )


def _known_values(records: Sequence[Mapping[str, Any]]) -> _KnownValues | None:
    """Gather each known field's values, or None unless every record is a dict.

    One ``itemgetter`` call a record reads all the known fields at C speed; a
    record that lacks one makes the page read them with ``get`` (null). A
    subclass of dict may answer lookups its own way, so it goes column by column.
    """
    if not set(map(type, records)) <= {dict}:
        return None
    try:
        rows = list(map(_read_known, records))
        exact = set(map(len, records)) <= {len(_READ_ORDER)}
    except KeyError:
        rows = [tuple(map(record.get, _READ_ORDER)) for record in records]
        exact = False
    columns = list(zip(*rows, strict=True)) or [()] * len(_READ_ORDER)
    return _KnownValues(columns, exact)


def _columns_in_one_pass(known: _KnownValues) -> list[pa.Array] | None:
    """Type a page's known columns with a few Arrow calls, or return None.

    All text fields go through Arrow as one list, the flags as another, and
    the two dates are cast in one call: per call, not per value, is where
    Arrow spends most on a 50-user page (#4). It is the same conversion as
    column by column, so when Arrow refuses a value, or a date needs the
    lenient parser, the page is simply typed again by
    :func:`_columns_one_by_one`, which names the culprit.
    """
    count = len(known.columns[0])
    links = known.columns[-1]
    # Arrow would also read [key, value] pairs as a map; the contract says object.
    if not set(map(type, links)) <= _DICT_OR_NULL:
        return None
    texts_end = len(_TEXT_FIELDS)
    dates_start = texts_end - len(TIMESTAMP_COLUMNS)
    try:
        texts = _joined_array(known.columns[:texts_end], pa.string())
        flags = _joined_array(known.columns[texts_end:-1], pa.bool_())
        dates = texts.slice(dates_start * count).cast(TIMESTAMP)
        typed = {LINKS: pa.array(links, LINKS_TYPE, from_pandas=False)}
    except _ARROW_ERRORS:
        return None

    typed.update(_split(texts, _TEXT_FIELDS[:dates_start], count))
    typed.update(_split(dates, TIMESTAMP_COLUMNS, count))
    typed.update(_split(flags, BOOLEAN_COLUMNS, count))
    typed[ATTRIBUTES] = pa.ExtensionArray.from_storage(JSON_TEXT, typed[ATTRIBUTES])
    return [typed[name] for name in COLUMNS]


def _split(
    joined: pa.Array, names: Sequence[str], count: int
) -> Iterator[tuple[str, pa.Array]]:
    """Name the columns of an array :func:`_joined_array` made, in order."""
    for index, name in enumerate(names):
        yield name, joined.slice(index * count, count)


def _joined_array(columns: list[tuple[Any, ...]], arrow_type: pa.DataType) -> pa.Array:
    """One Arrow array of several columns' values, column after column."""
    return pa.array(list(chain.from_iterable(columns)), arrow_type, from_pandas=False)


def _columns_one_by_one(records: Sequence[Mapping[str, Any]]) -> list[pa.Array]:
    """Type each known column from its own list of values, naming any bad value."""
    sids = [record.get("sid") for record in records]
    return [
        _typed_column(name, [r.get(name) for r in records], sids)
        for name in USERS_SCHEMA.names
    ]


def _typed_column(name: str, values: list[Any], sids: list[Any]) -> pa.Array:
    arrow_type = USERS_SCHEMA.field(name).type
    if name in ("date_created", "date_updated"):
        return _timestamp_column(name, values, sids)
    if arrow_type == JSON_TEXT:
        storage = _strict_array(name, values, pa.string(), sids)
        return pa.ExtensionArray.from_storage(JSON_TEXT, storage)
    if name == LINKS:
        _check_links(values, sids)
    return _strict_array(name, values, arrow_type, sids)


def _strict_array(
    name: str, values: list[Any], arrow_type: pa.DataType, sids: list[Any]
) -> pa.Array:
    try:
        return pa.array(values, type=arrow_type, from_pandas=False)
    except _ARROW_ERRORS:
        expected = _expected_kind(arrow_type)
        for value, sid in zip(values, sids, strict=True):
            try:
                pa.array([value], type=arrow_type)
            except _ARROW_ERRORS:
                raise _wrong_value(name, sid, value, expected) from None
        raise


def _timestamp_column(name: str, values: list[Any], sids: list[Any]) -> pa.Array:
    text = _strict_array(name, values, pa.string(), sids)
    try:
        # Fast path: Arrow parses ISO 8601 with "Z" or an offset, and fractions.
        return pc.cast(text, USERS_SCHEMA.field(name).type)
    except _ARROW_ERRORS:
        # Slow path for forms Arrow refuses (no offset, nanoseconds, basic format).
        parsed = [
            _parse_timestamp(name, v, sid) for v, sid in zip(values, sids, strict=True)
        ]
        return pa.array(parsed, type=USERS_SCHEMA.field(name).type)


def _parse_timestamp(name: str, value: str | None, sid: Any) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
        # The API documents its dates as GMT; a value without an offset is read so.
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        # OverflowError: an offset that moves the moment out of years 1-9999.
        raise _wrong_value(name, sid, value, "an ISO 8601 date-time") from None


def _check_links(values: list[Any], sids: list[Any]) -> None:
    for value, sid in zip(values, sids, strict=True):
        if value is not None and not isinstance(value, dict):
            raise _wrong_value(LINKS, sid, value, "an object of URLs")


def _decode_attributes(
    column: pa.Array,
    records: Sequence[Mapping[str, Any]],
    mode: InvalidAttributes,
    known: _KnownValues | None = None,
) -> tuple[list[Any], set[int]]:
    # The texts the one pass read are the records' own: no copy out of Arrow.
    texts = known.columns[_ATTRIBUTES_READ_AT] if known else column.storage.to_pylist()
    try:
        return [None if text is None else orjson.loads(text) for text in texts], set()
    except orjson.JSONDecodeError:
        pass  # rare: go row by row to name the row, or null it

    texts = column.storage.to_pylist()  # str, as Arrow holds them, for the message

    decoded: list[Any] = []
    invalid: set[int] = set()
    for row, (text, record) in enumerate(zip(texts, records, strict=True)):
        sid = record.get("sid")
        if text is None:
            decoded.append(None)
            continue
        try:
            decoded.append(orjson.loads(text))
        except orjson.JSONDecodeError as error:
            if mode == "raise":
                raise SchemaError(
                    f"field 'attributes' of user {sid} is not valid JSON ({error}); "
                    "pass invalid_attributes='null' to load such rows with a null "
                    "value and their text in column invalid_attributes_text"
                ) from None
            decoded.append(None)
            invalid.add(row)
    if invalid:
        logger.warning(
            "%d rows have attributes that are not JSON; loaded as null", len(invalid)
        )
    return decoded, invalid


def _unknown_fields(records: Sequence[Mapping[str, Any]]) -> list[str]:
    unknown: dict[str, None] = {}
    for record in records:
        if record.keys() != _KNOWN:
            unknown.update(dict.fromkeys(k for k in record if k not in _KNOWN))
    for name in unknown:
        logger.info("keeping field %r, which the users schema does not know", name)
    return list(unknown)


def _loose_column(values: list[Any]) -> pa.Array:
    """Type a field the schema does not know: Arrow's guess, else JSON text.

    Objects and arrays are always JSON text: as an Arrow struct, an empty
    object cannot be written to Parquet, and every row would get every key
    seen in the page, filled with nulls it was never sent. JSON text has the
    ``JSON_TEXT`` type, so it is never mistaken for a plain string field.
    """
    if not any(isinstance(value, dict | list) for value in values):
        try:
            return pa.array(values, from_pandas=False)
        except _ARROW_ERRORS:
            pass
    return _json_text_column(values)


def _json_text_column(values: list[Any]) -> pa.Array:
    texts = [None if v is None else orjson.dumps(v).decode() for v in values]
    return pa.array(texts, type=JSON_TEXT)


def _unknown_fields_as_json_text(tables: list[pa.Table]) -> list[pa.Table]:
    """Turn unknown fields whose types cannot be merged into JSON text."""
    types: dict[str, list[pa.DataType]] = {}
    for table in tables:
        for column in table.schema:
            if column.name not in _KNOWN:
                types.setdefault(column.name, []).append(column.type)
    clashing = {name for name, found in types.items() if not _mergeable(found)}

    converted = []
    for table in tables:
        for index, name in enumerate(table.column_names):
            if name in clashing and table.schema.field(index).type != JSON_TEXT:
                column = _json_text_column(table.column(index).to_pylist())
                table = table.set_column(index, name, column)
        converted.append(table)
    return converted


def _mergeable(types: list[pa.DataType]) -> bool:
    schemas = [pa.schema([pa.field("value", arrow_type)]) for arrow_type in types]
    try:
        pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def _column_to_pandas(column: pa.ChunkedArray, backend: DtypeBackend) -> pd.Series:
    dtype = pandas_dtype(column.type, backend)
    series: pd.Series
    if isinstance(dtype, pd.ArrowDtype):
        series = pd.Series(pd.arrays.ArrowExtensionArray(column), copy=False)
    elif pa.types.is_map(column.type):
        series = column.to_pandas(maps_as_pydicts="strict")
    else:
        series = column.to_pandas(types_mapper={column.type: dtype}.get)
    return series


def _wrong_value(name: str, sid: Any, value: Any, expected: str) -> SchemaError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return SchemaError(f"field {name!r} of user {sid} is {shown}, expected {expected}")


def _expected_kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "true, false or null"
    if pa.types.is_map(arrow_type):
        return "an object of URL strings"
    return "a string or null"


def _json_kind(value: Any) -> str:
    kinds = {
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }
    return kinds.get(type(value), type(value).__name__)
