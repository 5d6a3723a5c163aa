"""Normalization of user records into a typed DataFrame.

Tests named ``test_bug_NN_...`` prove that the kind of fault of the field case
``/work/shared/cases/BUG-NN.json`` is fixed; the records are built here.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from pandas.testing import assert_frame_equal, assert_series_equal
from scripted import ACCOUNT_SID, ROLE_SID, SERVICE_SID, USERS_PATH
from scripted import user_record as make_user
from scripted import user_sid as sid

from conv_frames import USERS_SCHEMA, ConfigurationError, SchemaError, users_frame
from conv_frames._frame import batches_to_frame, concat_batches, normalize_records
from conv_frames._schema import STRING_COLUMNS

BASE_URL = f"https://conversations.twilio.com{USERS_PATH}"

COLUMNS = [
    "sid",
    "account_sid",
    "chat_service_sid",
    "role_sid",
    "identity",
    "friendly_name",
    "attributes",
    "is_online",
    "is_notifiable",
    "date_created",
    "date_updated",
    "url",
    "links",
]
TEXT_COLUMNS = list(STRING_COLUMNS)
UTC_US = pd.DatetimeTZDtype(unit="us", tz="UTC")
LINKS_TYPE = pa.map_(pa.string(), pa.string())

#: The contract's dtype of every column, spelled here rather than taken from
#: the package, so that a drift in ``_schema`` fails these tests.
DTYPES: dict[str, dict[str, Any]] = {
    "numpy_nullable": {
        **dict.fromkeys(TEXT_COLUMNS, pd.StringDtype(na_value=pd.NA)),
        "attributes": object,
        "is_online": pd.BooleanDtype(),
        "is_notifiable": pd.BooleanDtype(),
        "date_created": UTC_US,
        "date_updated": UTC_US,
        "links": object,
    },
    "pyarrow": {
        **dict.fromkeys(TEXT_COLUMNS, pd.ArrowDtype(pa.string())),
        "attributes": object,
        "is_online": pd.ArrowDtype(pa.bool_()),
        "is_notifiable": pd.ArrowDtype(pa.bool_()),
        "date_created": pd.ArrowDtype(pa.timestamp("us", tz="UTC")),
        "date_updated": pd.ArrowDtype(pa.timestamp("us", tz="UTC")),
        "links": pd.ArrowDtype(LINKS_TYPE),
    },
}
BACKENDS = list(DTYPES)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC").as_unit("us")


def typed(values: list[Any], column: str, backend: str) -> pd.Series:
    """A Series of ``values`` with the contract's dtype for ``column``."""
    dtype = DTYPES[backend][column]
    if dtype is object:
        return pd.Series(values, dtype=object, name=column)
    return pd.Series(pd.array(values, dtype=dtype), name=column)


def expected_frame(columns: dict[str, list[Any]], backend: str) -> pd.DataFrame:
    return pd.DataFrame(
        {name: typed(values, name, backend) for name, values in columns.items()}
    )


# -- one frame of edge values ----------------------------------------------------------

LINKS_1 = {"user_conversations": f"{BASE_URL}/{sid(1)}/Conversations"}
EDGE_RECORDS = [
    make_user(
        1,
        identity="zoë.ångström@example.com",
        friendly_name="名前 🚀",
        attributes='{"duty": "agent", "langs": ["fr", "日本語"], "n": 1.5}',
        is_online=True,
        is_notifiable=False,
        date_created="2020-03-24T20:38:21.123456Z",
        date_updated="2020-03-24T21:38:21.5+01:00",
    ),
    make_user(
        2,
        role_sid=None,
        friendly_name=None,
        attributes="[1,2,3]",
        is_notifiable=True,
        date_created="2021-06-01T08:00:00-07:00",
        date_updated="2021-06-01T15:00:00",
        links={},
    ),
    make_user(
        3,
        identity="مرحبا",
        attributes="null",
        is_online=False,
        date_created=None,
        date_updated="2019-12-16T22:18:38.000Z",
        url=None,
        links=None,
    ),
    make_user(
        4,
        identity="",
        attributes='"just a string"',
        date_created="1970-01-01T00:00:00.000001+00:00",
        date_updated="2099-12-31T23:59:59.999999-12:00",
    ),
]
EDGE_VALUES: dict[str, list[Any]] = {
    "sid": [sid(1), sid(2), sid(3), sid(4)],
    "account_sid": [ACCOUNT_SID] * 4,
    "chat_service_sid": [SERVICE_SID] * 4,
    "role_sid": [ROLE_SID, None, ROLE_SID, ROLE_SID],
    "identity": ["zoë.ångström@example.com", "agent-002", "مرحبا", ""],
    "friendly_name": ["名前 🚀", None, "Agent 003", "Agent 004"],
    "attributes": [
        {"duty": "agent", "langs": ["fr", "日本語"], "n": 1.5},
        [1, 2, 3],
        None,
        "just a string",
    ],
    "is_online": [True, None, False, None],
    "is_notifiable": [False, True, None, None],
    "date_created": [
        utc("2020-03-24T20:38:21.123456"),
        utc("2021-06-01T15:00:00"),
        None,
        utc("1970-01-01T00:00:00.000001"),
    ],
    "date_updated": [
        utc("2020-03-24T20:38:21.5"),
        utc("2021-06-01T15:00:00"),
        utc("2019-12-16T22:18:38"),
        utc("2100-01-01T11:59:59.999999"),
    ],
    "url": [
        f"{BASE_URL}/{sid(1)}",
        f"{BASE_URL}/{sid(2)}",
        None,
        f"{BASE_URL}/{sid(4)}",
    ],
    "links": [
        LINKS_1,
        {},
        None,
        {"user_conversations": f"{BASE_URL}/{sid(4)}/Conversations"},
    ],
}


def edge_values(backend: str) -> dict[str, list[Any]]:
    """``EDGE_VALUES`` as each backend shows them (an Arrow map is key/value pairs)."""
    if backend == "numpy_nullable":
        return EDGE_VALUES
    links = [None if v is None else list(v.items()) for v in EDGE_VALUES["links"]]
    return {**EDGE_VALUES, "links": links}


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_values_make_the_expected_frame(backend: str) -> None:
    frame = users_frame(EDGE_RECORDS, dtype_backend=backend)

    assert_frame_equal(frame, expected_frame(edge_values(backend), backend))
    assert frame.attrs == {"invalid_attributes": 0, "duplicate_sids": 0}


def test_pyarrow_links_are_an_arrow_map_of_strings() -> None:
    links = users_frame(EDGE_RECORDS, dtype_backend="pyarrow")["links"]

    assert links.dtype == pd.ArrowDtype(LINKS_TYPE)
    assert links.iloc[0] == [("user_conversations", LINKS_1["user_conversations"])]
    assert links.isna().tolist() == [False, False, True, False]


def test_records_may_be_any_iterable() -> None:
    frame = users_frame(make_user(n) for n in (1, 2))

    assert frame["sid"].tolist() == [sid(1), sid(2)]


# -- dtypes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "column", "dtype"),
    [(b, c, d) for b, table in DTYPES.items() for c, d in table.items()],
)
@pytest.mark.parametrize("rows", [0, 1], ids=["empty", "one_row"])
def test_column_dtype(backend: str, column: str, dtype: Any, rows: int) -> None:
    records = [make_user(1, is_online=True)][:rows]

    frame = users_frame(records, dtype_backend=backend)

    assert frame[column].dtype == dtype


def test_columns_follow_the_schema_in_api_order() -> None:
    assert list(USERS_SCHEMA.names) == COLUMNS
    assert list(users_frame([make_user()]).columns) == COLUMNS


@pytest.mark.parametrize("backend", BACKENDS)
def test_bug_22_no_users_is_an_empty_frame_with_every_column_typed(
    backend: str,
) -> None:
    """BUG-22: zero rows must not fall back to object or null columns."""
    expected = expected_frame({name: [] for name in COLUMNS}, backend)

    assert_frame_equal(users_frame([], dtype_backend=backend), expected)
    assert_frame_equal(batches_to_frame([], dtype_backend=backend), expected)
    empty_batch = normalize_records([])
    assert_frame_equal(batches_to_frame([empty_batch], dtype_backend=backend), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_fields_are_typed_null_columns(backend: str) -> None:
    frame = users_frame([{"sid": sid(1)}, {"sid": sid(2)}], dtype_backend=backend)

    nulls = {name: [None, None] for name in COLUMNS if name != "sid"}
    assert_frame_equal(
        frame, expected_frame({"sid": [sid(1), sid(2)], **nulls}, backend)[COLUMNS]
    )


# -- BUG-13 / BUG-14: booleans ---------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_bug_13_all_null_booleans_keep_their_boolean_dtype(backend: str) -> None:
    """BUG-13: a column that is null on every row is still typed by the schema."""
    frame = users_frame([make_user(n) for n in (1, 2, 3)], dtype_backend=backend)

    for column in ("is_online", "is_notifiable"):
        assert_series_equal(frame[column], typed([None] * 3, column, backend))
    batch = normalize_records([make_user(1)])
    assert batch.table.schema.field("is_online").type == pa.bool_()


@pytest.mark.parametrize("backend", BACKENDS)
def test_bug_13_batches_with_and_without_values_concatenate(backend: str) -> None:
    """BUG-13 (two_batches): a page of nulls, then a page with a value."""
    batches = [
        normalize_records([make_user(1), make_user(2)]),
        normalize_records([make_user(3, is_online=True)]),
    ]

    frame = batches_to_frame(batches, dtype_backend=backend)

    assert_series_equal(
        frame["is_online"], typed([None, None, True], "is_online", backend)
    )
    assert concat_batches(batches).schema == USERS_SCHEMA


@pytest.mark.parametrize("backend", BACKENDS)
def test_bug_14_null_booleans_stay_na_never_false(backend: str) -> None:
    """BUG-14: null means "unknown", so it is NA, not False (nor True)."""
    records = [
        make_user(1, is_online=None, is_notifiable=True),
        make_user(2, is_online=True, is_notifiable=None),
        make_user(3, is_online=None, is_notifiable=False),
    ]

    frame = users_frame(records, dtype_backend=backend)

    assert frame["is_online"].isna().tolist() == [True, False, True]
    assert frame["is_notifiable"].isna().tolist() == [False, True, False]
    assert frame.loc[1, "is_notifiable"] is pd.NA
    assert frame["is_notifiable"].dropna().tolist() == [True, False]
    # Counting "known offline" must not count the unknown rows.
    assert int(frame["is_notifiable"].eq(False).sum()) == 1


# -- BUG-15 / 17 / 18: timestamps ------------------------------------------------------

TIMESTAMP_FORMS = [
    ("2020-03-24T20:38:21Z", "2020-03-24T20:38:21"),
    ("2020-03-24T20:38:21.000Z", "2020-03-24T20:38:21"),
    ("2020-03-24T20:38:21.250Z", "2020-03-24T20:38:21.25"),
    ("2020-03-24T20:38:21.123456Z", "2020-03-24T20:38:21.123456"),
    ("2020-03-24T20:38:21.1Z", "2020-03-24T20:38:21.1"),
    ("2020-03-24T20:38:21.123456789Z", "2020-03-24T20:38:21.123456"),
    ("2020-03-24T20:38:21+00:00", "2020-03-24T20:38:21"),
    ("2020-03-24T20:38:21+01:00", "2020-03-24T19:38:21"),
    ("2021-06-01T08:00:00-07:00", "2021-06-01T15:00:00"),
    ("2020-03-24T20:38:21+05:30", "2020-03-24T15:08:21"),
    ("2020-03-24T20:38:21+0530", "2020-03-24T15:08:21"),
    ("2020-03-24T20:38:21.5-03:30", "2020-03-25T00:08:21.5"),
    ("2020-03-24T20:38:21+14:00", "2020-03-24T06:38:21"),
    ("2020-03-24T20:38:21", "2020-03-24T20:38:21"),
    ("2020-03-24T20:38:21.75", "2020-03-24T20:38:21.75"),
    ("2020-03-24 20:38:21Z", "2020-03-24T20:38:21"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("text", "moment"), TIMESTAMP_FORMS)
def test_bugs_15_17_18_every_iso_8601_form_reads_as_utc(
    text: str, moment: str, backend: str
) -> None:
    """BUG-15 (offsets), BUG-17 (trailing Z), BUG-18 (fractions); naive is UTC."""
    frame = users_frame([make_user(date_created=text)], dtype_backend=backend)

    assert_series_equal(
        frame["date_created"], typed([utc(moment)], "date_created", backend)
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_bugs_15_17_18_all_forms_mixed_in_one_column(backend: str) -> None:
    """One page mixing every form: no format is inferred from the first row."""
    records = [make_user(n, date_created=t) for n, (t, _) in enumerate(TIMESTAMP_FORMS)]
    records.append(make_user(99, date_created=None))

    frame = users_frame(records, dtype_backend=backend)

    moments = [utc(moment) for _, moment in TIMESTAMP_FORMS] + [None]
    assert_series_equal(frame["date_created"], typed(moments, "date_created", backend))


# -- values of the wrong type ----------------------------------------------------------


DATE = "an ISO 8601 date-time"
BOOL = "true, false or null"
TEXT = "a string or null"


@pytest.mark.parametrize(
    ("field", "value", "shown", "expected"),
    [
        ("is_online", "true", "'true'", BOOL),
        ("is_notifiable", "False", "'False'", BOOL),
        ("is_online", 1, "1", BOOL),
        ("is_online", 0.0, "0.0", BOOL),
        ("date_created", "yesterday", "'yesterday'", DATE),
        ("date_updated", "", "''", DATE),
        ("date_created", "2020-02-30T00:00:00Z", "'2020-02-30T00:00:00Z'", DATE),
        ("date_created", "2020-03-24T24:00:00Z", "'2020-03-24T24:00:00Z'", DATE),
        ("date_created", "2020-03-24T20:38:21z", "'2020-03-24T20:38:21z'", DATE),
        ("date_created", 1585082301, "1585082301", TEXT),
        ("sid", 42, "42", TEXT),
        ("identity", 42, "42", TEXT),
        ("friendly_name", True, "True", TEXT),
        ("role_sid", 1.5, "1.5", TEXT),
        ("url", ["https://x"], "['https://x']", TEXT),
        ("attributes", {"duty": "agent"}, "{'duty': 'agent'}", TEXT),
        ("links", ["https://x"], "['https://x']", "an object of URLs"),
        ("links", "https://x", "'https://x'", "an object of URLs"),
        ("links", {"a": 1}, "{'a': 1}", "an object of URL strings"),
        ("links", {"a": {"b": "c"}}, "{'a': {'b': 'c'}}", "an object of URL strings"),
    ],
)
def test_a_value_of_the_wrong_type_names_field_sid_and_value(
    field: str, value: Any, shown: str, expected: str
) -> None:
    records = [make_user(2), make_user(1, **{field: value})]
    user = value if field == "sid" else sid(1)
    message = f"field {field!r} of user {user} is {shown}, expected {expected}"

    with pytest.raises(SchemaError, match=f"^{re.escape(message)}$"):
        users_frame(records)


def test_a_date_moved_before_year_1_by_its_offset_is_a_schema_error() -> None:
    # The naive row sends the column through Python's parser, where this used
    # to escape as a bare OverflowError.
    records = [
        make_user(2, date_created="2020-03-24T20:38:21"),
        make_user(1, date_created="0001-01-01T00:30+01:00"),
    ]
    message = (
        f"field 'date_created' of user {sid(1)} is '0001-01-01T00:30+01:00', "
        "expected an ISO 8601 date-time"
    )

    with pytest.raises(SchemaError, match=f"^{re.escape(message)}$"):
        users_frame(records)


def test_a_long_wrong_value_is_shortened_in_the_message() -> None:
    value = "x" * 500

    with pytest.raises(SchemaError) as raised:
        users_frame([make_user(1, is_online=value)])

    shown = repr(value)[:77] + "..."
    assert str(raised.value) == (
        f"field 'is_online' of user {sid(1)} is {shown}, expected true, false or null"
    )


def test_schema_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match="is_online"):
        users_frame([make_user(1, is_online="yes")])


@pytest.mark.parametrize(
    ("record", "kind"),
    [(["a"], "array"), ("US1", "string"), (None, "null"), (7, "number")],
)
def test_a_record_that_is_not_an_object_is_a_schema_error(
    record: Any, kind: str
) -> None:
    with pytest.raises(
        SchemaError, match=f"^user record 1 is a JSON {kind}, not an object$"
    ):
        users_frame([make_user(1), record])


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "dtype_backend",
            "numpy",
            "dtype_backend='numpy' is not supported; use 'numpy_nullable' or 'pyarrow'",
        ),
        (
            "invalid_attributes",
            "ignore",
            "invalid_attributes='ignore' is not supported; use 'raise' or 'null'",
        ),
    ],
)
def test_an_unknown_option_value_is_refused(
    option: str, value: str, message: str
) -> None:
    # Also for valid records: a typo must not silently pick a mode.
    with pytest.raises(ConfigurationError, match=f"^{re.escape(message)}$"):
        users_frame([make_user(1, attributes="{duty")], **{option: value})
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        users_frame([make_user(1)], **{option: value})


# -- BUG-28: attributes ----------------------------------------------------------------

INVALID_JSON_TAIL = (
    "; pass invalid_attributes='null' to load such rows with a null value "
    "and their text in column invalid_attributes_text"
)


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def depth_of(value: Any) -> int:
    depth = 0
    while isinstance(value, dict):
        value, depth = value["a"], depth + 1
    return depth


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{duty: tech", id="invalid_json"),
        pytest.param('{"score": NaN}', id="nan_literal"),
        pytest.param('{"score": Infinity}', id="infinity_literal"),
        pytest.param("", id="empty_text"),
        pytest.param('{"a": 1}}', id="trailing_garbage"),
        pytest.param("{'a': 1}", id="single_quotes"),
        pytest.param(nested(1025), id="nested_1025"),
        pytest.param(nested(5000), id="nested_5000"),
    ],
)
def test_bug_28_attributes_that_are_not_json_are_a_schema_error(text: str) -> None:
    """BUG-28: by default, never a RecursionError or a silent null."""
    records = [make_user(1), make_user(5, attributes=text)]
    prefix = re.escape(f"field 'attributes' of user {sid(5)} is not valid JSON (")

    with pytest.raises(
        SchemaError, match=f"^{prefix}.*{re.escape(INVALID_JSON_TAIL)}$"
    ):
        users_frame(records)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bug_28_valid_non_object_json_decodes_as_such(backend: str) -> None:
    """BUG-28 (valid_non_object_json): any JSON value is kept, decoded."""
    blob = "x" * 1_048_576
    texts = ["[1,2,3]", '"just a string"', "null", f'{{"blob":"{blob}"}}', None]
    records = [make_user(n, attributes=t) for n, t in enumerate(texts, start=2)]
    records.append(make_user(9, attributes=nested(1024)))
    records.append(make_user(10, attributes='  {"é": "\\u00e9", "n": -0.5e-3} '))

    frame = users_frame(records, dtype_backend=backend)

    values = frame["attributes"].tolist()
    assert values[:5] == [[1, 2, 3], "just a string", None, {"blob": blob}, None]
    assert depth_of(values[5]) == 1024
    assert values[6] == {"é": "é", "n": -0.0005}
    assert frame["attributes"].dtype == object
    assert frame.attrs["invalid_attributes"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_bug_28_lenient_mode_loads_invalid_attributes_as_null(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    texts = ["{duty: tech", '{"ok": true}', '{"score": NaN}', nested(5000), "null"]
    records = [make_user(n, attributes=t) for n, t in enumerate(texts, start=1)]

    with caplog.at_level(logging.WARNING, logger="conv_frames"):
        frame = users_frame(records, dtype_backend=backend, invalid_attributes="null")

    assert frame["attributes"].tolist() == [None, {"ok": True}, None, None, None]
    assert frame.attrs["invalid_attributes"] == 3
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "3 rows have attributes that are not JSON; loaded as null")
    ]
    # The original text is kept beside, and attributes stays JSON-typed.
    kept = (
        frame["invalid_attributes_text"]
        .astype(object)
        .where(frame["invalid_attributes_text"].notna(), None)
    )
    assert kept.tolist() == [texts[0], None, texts[2], texts[3], None]
    batch = normalize_records(records, invalid_attributes="null")
    assert batch.table.column("attributes").to_pylist() == [
        None,
        '{"ok": true}',
        None,
        None,
        "null",
    ]
    assert batch.table.schema.field("attributes").type == pa.json_(pa.string())
    assert batch.invalid_attributes == 3


# -- duplicates and fields the schema does not know ------------------------------------


def test_duplicate_sids_are_kept_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = [
        make_user(1),
        make_user(2),
        make_user(1, identity="again"),
        make_user(1, identity="and again"),
        {"sid": None},
        {"sid": None},
    ]

    with caplog.at_level(logging.INFO, logger="conv_frames"):
        frame = users_frame(records)

    assert frame["identity"].tolist()[:4] == [
        "agent-001",
        "agent-002",
        "again",
        "and again",
    ]
    assert frame.attrs["duplicate_sids"] == 2
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "2 rows repeat a user SID seen earlier; they are kept as the API sent "
            "them (see frame.attrs['duplicate_sids'])",
        )
    ]


def test_no_duplicates_means_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="conv_frames"):
        frame = users_frame([make_user(1), make_user(2)])

    assert frame.attrs["duplicate_sids"] == 0
    assert caplog.records == []


def test_an_unknown_field_is_kept_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    records = [make_user(1, new_count=3), make_user(2, new_flag=True)]

    with caplog.at_level(logging.INFO, logger="conv_frames"):
        frame = users_frame(records)

    assert list(frame.columns) == [*COLUMNS, "new_count", "new_flag"]
    assert_series_equal(
        frame["new_count"],
        pd.Series(pd.array([3, None], dtype="Int64"), name="new_count"),
    )
    assert_series_equal(
        frame["new_flag"],
        pd.Series(pd.array([None, True], dtype="boolean"), name="new_flag"),
    )
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "keeping field 'new_count', which the users schema does not know"),
        ("INFO", "keeping field 'new_flag', which the users schema does not know"),
    ]


@pytest.mark.parametrize(
    ("values", "numpy_nullable", "pyarrow"),
    [
        ([1, None, -(2**63)], pd.Int64Dtype(), pd.ArrowDtype(pa.int64())),
        ([1.5, None, 2], pd.Float64Dtype(), pd.ArrowDtype(pa.float64())),
        (["é", None, ""], pd.StringDtype(na_value=pd.NA), pd.ArrowDtype(pa.string())),
        ([False, None, True], pd.BooleanDtype(), pd.ArrowDtype(pa.bool_())),
    ],
)
def test_unknown_scalar_fields_get_a_nullable_dtype(
    values: list[Any], numpy_nullable: Any, pyarrow: Any
) -> None:
    """A new field that is null on some rows must not fail an int64 cast."""
    records = [make_user(n, extra=v) for n, v in enumerate(values, start=1)]

    for backend, dtype in (("numpy_nullable", numpy_nullable), ("pyarrow", pyarrow)):
        frame = users_frame(records, dtype_backend=backend)
        expected = pd.Series(pd.array(values, dtype=dtype), name="extra")
        assert_series_equal(frame["extra"], expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_objects_arrays_and_mixed_kinds_are_json_text(backend: str) -> None:
    """BUG-19's kind for unknown fields: {} must not become a childless struct."""
    values = [{}, {"a": 1}, {"b": "é"}, [], [1, "x"], None]
    mixed = [1, "1", True, None, 2.5, "x"]
    records = [
        make_user(n, nested=v, mixed=m)
        for n, (v, m) in enumerate(zip(values, mixed, strict=True), start=1)
    ]

    frame = users_frame(records, dtype_backend=backend)

    assert frame["nested"].tolist() == [
        "{}",
        '{"a":1}',
        '{"b":"é"}',
        "[]",
        '[1,"x"]',
        None,
    ]
    assert frame["mixed"].tolist() == ["1", '"1"', "true", None, "2.5", '"x"']


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_fields_may_differ_between_batches(backend: str) -> None:
    """A field on one page only, or with another kind of value on another page."""
    batches = [
        normalize_records([make_user(1, late=None, kind=1, loose=[1, "a"])]),
        normalize_records([make_user(2, late=7, kind="seven", loose=5)]),
        normalize_records([make_user(3)]),
    ]

    frame = batches_to_frame(batches, dtype_backend=backend)

    assert frame["late"].isna().tolist() == [True, False, True]
    assert frame["late"].dropna().tolist() == [7]
    assert frame["kind"].tolist() == ["1", '"seven"', None]
    # Already JSON text on page 1: not encoded a second time.
    assert frame["loose"].tolist() == ['[1,"a"]', "5", None]
    assert frame["sid"].tolist() == [sid(1), sid(2), sid(3)]


# -- BUG-19: links ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "links",
    [
        pytest.param([{}, LINKS_1], id="one_empty"),
        pytest.param([{}, {}], id="all_empty"),
        pytest.param([None, LINKS_1], id="null_links"),
        pytest.param([None, None], id="all_null"),
        pytest.param([{"a": "x", "b": "y", "c": "z"}, {"é": "ü"}], id="any_keys"),
    ],
)
def test_bug_19_links_are_dicts_as_sent(links: list[Any]) -> None:
    """BUG-19: an empty links object stays {}, null stays None."""
    records = [make_user(n, links=v) for n, v in enumerate(links, start=1)]

    frame = users_frame(records)

    assert frame["links"].tolist() == links
    assert frame["links"].dtype == object
    arrow = users_frame(records, dtype_backend="pyarrow")["links"]
    assert arrow.isna().tolist() == [v is None for v in links]
    assert arrow.dropna().tolist() == [list(v.items()) for v in links if v is not None]


# -- BUG-23: text columns --------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_bug_23_text_columns_are_string_dtype_with_na(backend: str) -> None:
    """BUG-23: not object, not pandas 3's NaN-backed "str"; missing is pd.NA."""
    records = [
        make_user(1),
        make_user(2, friendly_name=None),
        make_user(3, role_sid=None),
    ]

    frame = users_frame(records, dtype_backend=backend)

    assert frame.loc[1, "friendly_name"] is pd.NA
    assert frame.loc[2, "role_sid"] is pd.NA
    assert frame["friendly_name"].tolist()[::2] == ["Agent 001", "Agent 003"]
    for column in TEXT_COLUMNS:
        assert frame[column].dtype != object
        assert pd.api.types.is_string_dtype(frame[column].dtype)
        assert frame[column].dtype.na_value is pd.NA
    object_columns = [c for c in frame.columns if frame[c].dtype == object]
    wanted = ["attributes", "links"] if backend == "numpy_nullable" else ["attributes"]
    assert object_columns == wanted


@pytest.mark.parametrize("records", [None, {"sid": "US1"}, "US1"])
def test_records_that_are_not_a_list_of_dicts_are_refused(records: Any) -> None:
    with pytest.raises(ConfigurationError, match="records must be a list"):
        users_frame(records)
