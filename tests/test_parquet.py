"""Parquet export and read-back: types other readers see, round trips, atomicity.

``export`` below follows the path ``load_users(parquet_path=...)`` takes: each
page is normalized, the batches' tables are concatenated and written by
``write_table`` with the frame's attrs. Tests named ``test_bug_NN_...`` prove
the kind of fault of the field case ``/work/shared/cases/BUG-NN.json``.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pandas.testing import assert_frame_equal
from scripted import SERVICE_SID, USERS_PATH
from scripted import user_record as make_user
from scripted import user_sid as sid

from conv_frames import (
    ConfigurationError,
    ExportError,
    read_parquet,
    users_frame,
)
from conv_frames._frame import (
    InvalidAttributes,
    batches_to_frame,
    concat_batches,
    normalize_records,
)
from conv_frames._parquet import atomic_path, write_table
from conv_frames._schema import STRING_COLUMNS

BASE_URL = f"https://conversations.twilio.com{USERS_PATH}"
BACKENDS = ["numpy_nullable", "pyarrow"]
TEXT_COLUMNS = list(STRING_COLUMNS)


#: Attributes texts whose exact bytes the export must keep: spacing, key
#: order, escapes, non-ASCII, every kind of JSON value, and 1 MiB.
RAW_ATTRIBUTES = [
    '{ "duty": "agent" }',
    '{"b":1,"a":2}',
    '{"name": "\\u00e9t\\u00e9", "emoji": "🚀"}',
    '  {"nested": {"list": [1, 2.50, -0e0, null, true]}}\n',
    "[1,2,3]",
    '"just a string"',
    "null",
    None,
    '{"blob":"' + "x" * 1_048_576 + '"}',
]


def edge_records() -> list[dict[str, Any]]:
    users = [
        make_user(n, attributes=text) for n, text in enumerate(RAW_ATTRIBUTES, start=1)
    ]
    users[0].update(
        identity="zoë.ångström@example.com",
        friendly_name="名前 🚀",
        is_online=True,
        is_notifiable=False,
        date_created="2020-03-24T20:38:21.123456Z",
        date_updated="2020-03-24T21:38:21.5+01:00",
    )
    users[1].update(
        role_sid=None,
        friendly_name=None,
        is_notifiable=True,
        date_created="2021-06-01T08:00:00-07:00",
        date_updated="2021-06-01T15:00:00",
        links={},
    )
    users[2].update(
        identity="مرحبا", is_online=False, date_created=None, url=None, links=None
    )
    return users


def export(
    pages: list[list[dict[str, Any]]],
    path: Path,
    *,
    invalid_attributes: InvalidAttributes = "raise",
    attrs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``pages`` as ``load_users`` does; return the attrs written."""
    batches = [
        normalize_records(p, invalid_attributes=invalid_attributes) for p in pages
    ]
    table = concat_batches(batches)
    attrs = attrs or {
        "service_sid": SERVICE_SID,
        "rows": table.num_rows,
        "invalid_attributes": sum(b.invalid_attributes for b in batches),
    }
    write_table(table, path, attrs)
    return attrs


@pytest.fixture
def duck() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB that never fetches an extension over the network."""
    connection = duckdb.connect()
    connection.execute("SET autoinstall_known_extensions = false")
    yield connection
    connection.close()


def describe(duck: duckdb.DuckDBPyConnection, path: Path) -> dict[str, str]:
    rows = duck.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)])
    return {name: kind for name, kind, *_ in rows.fetchall()}


# -- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_gives_the_same_frame_and_attrs(
    tmp_path: Path, backend: str
) -> None:
    path = tmp_path / "users.parquet"
    frame = users_frame(edge_records(), dtype_backend=backend)
    frame.attrs.update(fetched_at="2024-05-01T10:00:00+00:00", note="é", pages=[1, 2])

    write_table(normalize_records(edge_records()).table, path, frame.attrs)
    back = read_parquet(path, dtype_backend=backend)

    assert_frame_equal(back, frame)
    assert back.attrs == frame.attrs


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_of_several_pages(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "users.parquet"
    pages = [edge_records()[:4], edge_records()[4:], []]

    attrs = export(pages, path)

    expected = batches_to_frame(
        [normalize_records(page) for page in pages], dtype_backend=backend
    )
    back = read_parquet(path, dtype_backend=backend)
    assert_frame_equal(back, expected)
    assert back.attrs == attrs


def test_raw_attributes_text_is_kept_byte_for_byte(
    tmp_path: Path, duck: duckdb.DuckDBPyConnection
) -> None:
    path = tmp_path / "users.parquet"
    export([edge_records()], path)

    stored = pq.read_table(path).column("attributes")
    assert [None if t is None else t.encode() for t in stored.to_pylist()] == [
        None if t is None else t.encode() for t in RAW_ATTRIBUTES
    ]
    seen = duck.execute(
        "SELECT attributes::VARCHAR FROM read_parquet(?)", [str(path)]
    ).fetchall()
    assert [text for (text,) in seen] == RAW_ATTRIBUTES


@pytest.mark.parametrize("backend", BACKENDS)
def test_bug_28_non_object_json_decodes_again_after_the_round_trip(
    tmp_path: Path, backend: str
) -> None:
    """BUG-28 (valid_non_object_json): array, string, "null" text, 1 MiB."""
    path = tmp_path / "users.parquet"
    export([edge_records()], path)

    values = read_parquet(path, dtype_backend=backend)["attributes"].tolist()

    assert values[4:8] == [[1, 2, 3], "just a string", None, None]
    assert values[8] == {"blob": "x" * 1_048_576}
    assert values == [None if t is None else json.loads(t) for t in RAW_ATTRIBUTES]


def test_bug_28_lenient_export_keeps_invalid_text_and_counts_it(
    tmp_path: Path,
) -> None:
    """BUG-28: invalid_attributes="null" loads; the Parquet file keeps the text."""
    path = tmp_path / "users.parquet"
    texts = ["{duty: tech", '{"score": NaN}', '{"ok": true}']
    pages = [[make_user(n, attributes=t) for n, t in enumerate(texts, start=1)]]

    attrs = export(pages, path, invalid_attributes="null")

    stored = pq.read_table(path)
    assert stored.column("attributes").to_pylist() == [None, None, '{"ok": true}']
    assert stored.column("invalid_attributes_text").to_pylist() == [*texts[:2], None]
    back = read_parquet(path)
    assert back["attributes"].tolist() == [None, None, {"ok": True}]
    assert back["invalid_attributes_text"].isna().tolist() == [False, False, True]
    assert back["invalid_attributes_text"].tolist()[:2] == texts[:2]
    assert back.attrs == attrs
    assert back.attrs["invalid_attributes"] == 2


def test_bug_28_lenient_export_stays_readable_by_duckdb(
    tmp_path: Path, duck: duckdb.DuckDBPyConnection
) -> None:
    """Text that is not JSON is never labelled JSON, so DuckDB reads the file."""
    path = tmp_path / "users.parquet"
    pages = [[make_user(1)], [make_user(2, attributes="{duty: tech")]]
    export(pages, path, invalid_attributes="null")

    query = (
        "SELECT sid, attributes->>'$.duty', invalid_attributes_text "
        "FROM read_parquet(?) ORDER BY sid"
    )
    rows = duck.execute(query, [str(path)]).fetchall()

    assert rows == [
        (f"US{1:032d}", "agent", None),
        (f"US{2:032d}", None, "{duty: tech"),
    ]
    assert str(pq.ParquetFile(path).schema.column(6).logical_type) == "JSON"


def test_a_file_from_another_writer_with_plain_text_attributes_is_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.parquet"
    table = normalize_records([make_user(1)]).table
    plain = table.set_column(
        table.column_names.index("attributes"),
        "attributes",
        table.column("attributes").cast(pa.string()),
    )
    pq.write_table(plain, path)

    assert_frame_equal(read_parquet(path), users_frame([make_user(1)]))


def test_a_parquet_file_that_is_not_a_users_export_is_bad_input(
    tmp_path: Path,
) -> None:
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"sid": ["US1"], "score": [1]}), path)

    # Bad input, not the API breaking its contract (SchemaError).
    with pytest.raises(
        ConfigurationError, match=re.escape(f"{path} is not a users export")
    ):
        read_parquet(path)


# -- the types other readers see ------------------------------------------------------

UTC_MICROS = {"Type": "Timestamp", "isAdjustedToUTC": True, "timeUnit": "microseconds"}
PARQUET_LEAVES = {
    **{name: ("BYTE_ARRAY", {"Type": "String"}) for name in TEXT_COLUMNS},
    "attributes": ("BYTE_ARRAY", {"Type": "JSON"}),
    "is_online": ("BOOLEAN", None),
    "is_notifiable": ("BOOLEAN", None),
    "date_created": ("INT64", UTC_MICROS),
    "date_updated": ("INT64", UTC_MICROS),
    "links.key_value.key": ("BYTE_ARRAY", {"Type": "String"}),
    "links.key_value.value": ("BYTE_ARRAY", {"Type": "String"}),
}
DUCKDB_TYPES = {
    **dict.fromkeys(TEXT_COLUMNS, "VARCHAR"),
    "attributes": "JSON",
    "is_online": "BOOLEAN",
    "is_notifiable": "BOOLEAN",
    "date_created": "TIMESTAMP WITH TIME ZONE",
    "date_updated": "TIMESTAMP WITH TIME ZONE",
    "links": "MAP(VARCHAR, VARCHAR)",
}


def parquet_leaves(path: Path) -> dict[str, tuple[str, dict[str, Any] | None]]:
    """Each leaf column's physical type and the parts of its logical type we set."""
    leaves: dict[str, tuple[str, dict[str, Any] | None]] = {}
    for column in pq.ParquetFile(path).schema:
        logical = json.loads(column.logical_type.to_json())
        kept = {
            k: logical[k]
            for k in ("Type", "isAdjustedToUTC", "timeUnit")
            if k in logical
        }
        leaves[column.path] = (
            column.physical_type,
            None if kept["Type"] == "None" else kept,
        )
    return leaves


@pytest.mark.parametrize(
    "pages",
    [
        pytest.param([[make_user(1, is_online=True)]], id="one_user"),
        pytest.param([[make_user(1), make_user(2)]], id="bug_13_all_null_booleans"),
        pytest.param([[]], id="bug_22_no_users"),
        pytest.param([], id="bug_22_no_pages"),
        pytest.param(
            [[make_user(1, links={}, attributes=None, date_created=None)]],
            id="bug_19_empty_links_and_nulls",
        ),
    ],
)
def test_parquet_physical_and_logical_types(
    tmp_path: Path, duck: duckdb.DuckDBPyConnection, pages: list[Any]
) -> None:
    """BUG-13 and BUG-22: never a null or INT32 column, whatever the values."""
    path = tmp_path / "users.parquet"
    batches = [normalize_records(page) for page in pages]
    write_table(concat_batches(batches), path, {})

    assert parquet_leaves(path) == PARQUET_LEAVES
    assert re.search(
        r"optional group field_id=-1 links \(Map\) \{\s+repeated group field_id=-1 "
        r"key_value \{",
        str(pq.ParquetFile(path).schema),
    )
    assert describe(duck, path) == DUCKDB_TYPES


def test_other_readers_see_the_values(
    tmp_path: Path, duck: duckdb.DuckDBPyConnection
) -> None:
    path = tmp_path / "users.parquet"
    export([edge_records()[:3]], path)

    rows = duck.execute(
        "SELECT identity, epoch_us(date_created), epoch_us(date_updated), "
        "is_online, is_notifiable, links['user_conversations'], cardinality(links) "
        "FROM read_parquet(?) ORDER BY sid",
        [str(path)],
    ).fetchall()

    assert rows == [
        (
            "zoë.ångström@example.com",
            1585082301123456,
            1585082301500000,
            True,
            False,
            f"{BASE_URL}/{sid(1)}/Conversations",
            1,
        ),
        ("agent-002", 1622559600000000, 1622559600000000, None, True, None, 0),
        ("مرحبا", None, 1585082301000000, False, None, None, None),
    ]


# -- BUG-13 / 19 / 22 -----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_bug_13_a_page_of_null_booleans_then_a_page_with_a_value(
    tmp_path: Path, backend: str
) -> None:
    """BUG-13 (two_batches): the file's column is bool, the values kept."""
    path = tmp_path / "users.parquet"
    export([[make_user(1), make_user(2)], [make_user(3, is_online=True)]], path)

    assert pq.read_schema(path).field("is_online").type == pa.bool_()
    assert pq.read_table(path).column("is_online").to_pylist() == [None, None, True]
    online = read_parquet(path, dtype_backend=backend)["is_online"]
    wanted = "boolean" if backend == "numpy_nullable" else "bool[pyarrow]"
    assert str(online.dtype) == wanted
    assert online.isna().tolist() == [True, True, False]


@pytest.mark.parametrize(
    "links",
    [
        pytest.param([{}, {"user_conversations": "u2"}], id="one_empty"),
        pytest.param([{}, {}], id="all_empty"),
        pytest.param([None, {"user_conversations": "u2"}], id="null_links"),
        pytest.param([None, None], id="all_null"),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bug_19_empty_and_null_links_are_written_and_read_back(
    tmp_path: Path, links: list[Any], backend: str
) -> None:
    """BUG-19: {} is not a struct without fields; it round-trips as {}."""
    path = tmp_path / "users.parquet"
    records = [make_user(n, links=v) for n, v in enumerate(links, start=1)]
    export([records], path)

    back = read_parquet(path, dtype_backend=backend)

    assert_frame_equal(back, users_frame(records, dtype_backend=backend))
    if backend == "numpy_nullable":
        assert back["links"].tolist() == links


@pytest.mark.parametrize("backend", BACKENDS)
def test_bug_22_no_users_is_an_empty_file_with_the_full_schema(
    tmp_path: Path, backend: str
) -> None:
    """BUG-22: zero rows keep every column's type in the file and the frame."""
    empty, full = tmp_path / "empty.parquet", tmp_path / "full.parquet"
    export([], empty, attrs={"rows": 0})
    export([[make_user(1)]], full)

    assert pq.ParquetFile(empty).metadata.num_rows == 0
    assert (
        pq.read_schema(empty).remove_metadata()
        == pq.read_schema(full).remove_metadata()
    )
    back = read_parquet(empty, dtype_backend=backend)
    assert_frame_equal(back, users_frame([], dtype_backend=backend))
    assert back.attrs == {"rows": 0}


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_fields_are_exported_and_read_back(
    tmp_path: Path, duck: duckdb.DuckDBPyConnection, backend: str
) -> None:
    """Fields the schema does not know, including {} and kinds that change."""
    path = tmp_path / "users.parquet"
    pages = [
        [make_user(1, extra={}, count=None, kind=1)],
        [make_user(2, extra={"a": [1]}, count=4, kind="four")],
    ]
    batches = [normalize_records(page) for page in pages]
    write_table(concat_batches(batches), path, {})

    back = read_parquet(path, dtype_backend=backend)

    assert_frame_equal(back, batches_to_frame(batches, dtype_backend=backend))
    assert back["extra"].tolist() == ["{}", '{"a":[1]}']
    assert back["kind"].tolist() == ["1", '"four"']
    types = describe(duck, path)
    assert (types["extra"], types["count"], types["kind"]) == ("JSON", "BIGINT", "JSON")


# -- atomic publish ------------------------------------------------------------------


def write_earlier_export(folder: Path) -> tuple[Path, bytes]:
    path = folder / "users.parquet"
    export([[make_user(1)]], path)
    return path, path.read_bytes()


def export_error(path: Path, reason: str) -> str:
    message = (
        f"could not write {path}: {reason}; check that the folder exists, is "
        "writable and has space (any earlier file there is untouched)"
    )
    return f"^{re.escape(message)}$"


def test_a_disk_full_while_writing_keeps_the_earlier_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, before = write_earlier_export(tmp_path)
    real_write = pq.ParquetWriter.write_table
    calls = []

    def half_write(writer: pq.ParquetWriter, table: pa.Table, **options: Any) -> None:
        real_write(writer, table, **options)  # part of the file is on disk
        calls.append(table.num_rows)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pq.ParquetWriter, "write_table", half_write)

    with pytest.raises(
        ExportError, match=export_error(path, os.strerror(errno.ENOSPC))
    ):
        export([[make_user(1), make_user(2)]], path)

    assert calls == [2]
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.parquet"]


def test_a_failed_rename_keeps_the_earlier_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, before = write_earlier_export(tmp_path)

    def refuse(source: Any, target: Any) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "replace", refuse)

    with pytest.raises(
        ExportError, match=export_error(path, os.strerror(errno.EACCES))
    ):
        export([[make_user(2)]], path)

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.parquet"]


def test_a_parent_that_is_a_file_is_an_export_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_bytes(b"keep me")
    path = blocker / "users.parquet"

    # Was a bare NotADirectoryError from the clean-up, hiding the ExportError.
    with pytest.raises(ExportError, match=re.escape(f"could not write {path}: ")) as e:
        export([[make_user(1)]], path)

    assert isinstance(e.value.__cause__, OSError)
    assert blocker.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder"]


def test_a_missing_folder_is_an_export_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "users.parquet"

    with pytest.raises(ExportError, match=re.escape(f"could not write {path}: ")):
        export([[make_user(1)]], path)

    assert list(tmp_path.iterdir()) == []


def test_any_failure_inside_atomic_path_removes_the_temporary_file(
    tmp_path: Path,
) -> None:
    path, before = write_earlier_export(tmp_path)

    def interrupted_export() -> None:
        with atomic_path(path) as temporary:
            temporary.write_bytes(b"partial")
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match=r"^interrupted$"):
        interrupted_export()

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.parquet"]


def test_a_successful_export_replaces_the_file_and_leaves_nothing_else(
    tmp_path: Path,
) -> None:
    path, before = write_earlier_export(tmp_path)

    export([[make_user(1), make_user(2)]], path)

    assert path.read_bytes() != before
    assert pq.ParquetFile(path).metadata.num_rows == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.parquet"]


def test_a_symlinked_output_replaces_its_target_and_keeps_the_link(
    tmp_path: Path,
) -> None:
    target = tmp_path / "real" / "users.parquet"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "users.parquet"
    link.symlink_to(target)

    export([[make_user(1)]], link)

    assert link.is_symlink()
    assert read_parquet(target)["sid"].tolist() == [sid(1)]
    assert sorted(p.name for p in target.parent.iterdir()) == ["users.parquet"]


@pytest.mark.parametrize("kind", ["folder", "device"])
def test_something_that_is_not_a_regular_file_is_never_replaced(
    tmp_path: Path, kind: str
) -> None:
    if kind == "folder":
        path = tmp_path / "users.parquet"
        path.mkdir()
    else:
        path = Path("/dev/null")

    with pytest.raises(ExportError, match="is not a regular file"):
        export([[make_user(1)]], path)

    assert path.is_dir() if kind == "folder" else path.is_char_device()


@pytest.mark.parametrize("bad", ["", ".", "/", b"users\0.parquet"])
def test_a_path_that_names_no_file_is_a_configuration_error(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="is not a file path"):
        export([[make_user(1)]], bad)


def test_a_file_that_is_not_parquet_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    path.write_text("name,sid\n")

    with pytest.raises(ConfigurationError, match="is not a readable Parquet file"):
        read_parquet(path)
