"""The one place that spells the columns of a users frame and their types.

The Arrow schema below is the source of truth; the pandas dtypes for each
``dtype_backend`` and the Parquet layout are derived from it. Keep the table
in README.md ("Columns and types") in step with this module.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd
import pyarrow as pa

__all__ = [
    "ATTRIBUTES",
    "BOOLEAN_COLUMNS",
    "COLUMNS",
    "INVALID_ATTRIBUTES_TEXT",
    "JSON_TEXT",
    "LINKS",
    "LINKS_TYPE",
    "STRING_COLUMNS",
    "TIMESTAMP",
    "TIMESTAMP_COLUMNS",
    "USERS_SCHEMA",
    "DtypeBackend",
    "pandas_dtype",
]

DtypeBackend = Literal["numpy_nullable", "pyarrow"]

STRING_COLUMNS = (
    "sid",
    "account_sid",
    "chat_service_sid",
    "role_sid",
    "identity",
    "friendly_name",
    "url",
)
BOOLEAN_COLUMNS = ("is_online", "is_notifiable")
TIMESTAMP_COLUMNS = ("date_created", "date_updated")
ATTRIBUTES = "attributes"
LINKS = "links"
#: The extra column that keeps attributes text that is not JSON, as sent, for
#: rows loaded with ``invalid_attributes="null"`` (their ``attributes`` is null).
INVALID_ATTRIBUTES_TEXT = "invalid_attributes_text"

#: Arrow type of the raw ``attributes`` text. pyarrow writes its JSON extension
#: type with Parquet's JSON logical type, so other readers see JSON, not bytes.
JSON_TEXT: pa.DataType = pa.json_(pa.string())
TIMESTAMP = pa.timestamp("us", tz="UTC")
LINKS_TYPE = pa.map_(pa.string(), pa.string())

#: Columns in the order the API documents them.
USERS_SCHEMA = pa.schema(
    [
        pa.field("sid", pa.string()),
        pa.field("account_sid", pa.string()),
        pa.field("chat_service_sid", pa.string()),
        pa.field("role_sid", pa.string()),
        pa.field("identity", pa.string()),
        pa.field("friendly_name", pa.string()),
        pa.field(ATTRIBUTES, JSON_TEXT),
        pa.field("is_online", pa.bool_()),
        pa.field("is_notifiable", pa.bool_()),
        pa.field("date_created", TIMESTAMP),
        pa.field("date_updated", TIMESTAMP),
        pa.field("url", pa.string()),
        pa.field(LINKS, LINKS_TYPE),
    ]
)
COLUMNS: tuple[str, ...] = tuple(USERS_SCHEMA.names)


#: Nullable pandas dtypes for the numbers an unknown field may hold, so that a
#: null in a new integer field is NA rather than a failed cast to int64.
_NULLABLE_NUMBERS: dict[pa.DataType, object] = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
    pa.float32(): pd.Float32Dtype(),
    pa.float64(): pd.Float64Dtype(),
}


def pandas_dtype(arrow_type: pa.DataType, backend: DtypeBackend) -> object:
    """Return the pandas dtype that a column of ``arrow_type`` gets.

    ``attributes`` holds decoded JSON (Python objects) in both backends.
    ``links`` holds dicts with ``numpy_nullable`` and stays an Arrow
    ``map<string, string>`` with ``pyarrow``; everything else follows the backend.
    """
    if arrow_type == JSON_TEXT:
        return object
    if backend == "pyarrow":
        return pd.ArrowDtype(arrow_type)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype()
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    if pa.types.is_timestamp(arrow_type):
        return pd.DatetimeTZDtype(unit=arrow_type.unit, tz=arrow_type.tz)
    # Maps, and unknown fields the schema does not describe: a nullable dtype
    # for numbers, Python objects for everything else (nulls, nested values).
    return _NULLABLE_NUMBERS.get(arrow_type, object)
