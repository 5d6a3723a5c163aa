"""The dataset as other tools read it: DuckDB, Polars and pyarrow, with no help."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from scripted import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    SERVICE_SID,
    ScriptedServer,
    Step,
    user_record,
    users_page,
)

import conv_frames
from conv_frames.emulator import Emulator

#: The glob the README gives: it names the partitions, so it skips .staging.
FILES = "service_sid=*/snapshot=*/*.parquet"
MANIFESTS = "service_sid=*/snapshot=*/_manifest.json"

#: The README's query, with its two globs as parameters: each service's
#: newest published snapshot (a manifest is the commit marker).
LATEST_PER_SERVICE = """
SELECT service_sid, snapshot, count(*) AS users,
       count(*) FILTER (WHERE attributes->>'$.plan' = 'enterprise') AS enterprise
FROM read_parquet($files, hive_partitioning = true)
WHERE (service_sid, snapshot) IN (
    SELECT (service_sid, snapshot)
    FROM read_json($manifests, hive_partitioning = false))
GROUP BY service_sid, snapshot
QUALIFY snapshot = max(snapshot) OVER (PARTITION BY service_sid)
ORDER BY service_sid
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two services, two snapshots each, and what an interrupted run leaves."""
    root = tmp_path_factory.mktemp("readers") / "users"
    with Emulator(users=[130, 12], seed=21) as emulator:
        options: dict[str, Any] = {
            "account_sid": emulator.account_sid,
            "auth_token": emulator.auth_token,
            "base_url": emulator.base_url,
        }
        keys = [
            conv_frames.export_snapshots(root, all_services=True, **options).snapshot
            for _ in range(2)
        ]
        users = {sid: emulator.users(sid) for sid in emulator.service_sids}
    first = emulator.service_sids[0]
    published = root / f"service_sid={first}" / f"snapshot={keys[1]}"
    # What a run killed mid-write leaves: a staged file, never published.
    staged = root / ".staging" / "2099-01-01T000000Z-killed"
    staged.mkdir(parents=True)
    shutil.copy(published / "part-0.parquet", staged / "part-0.parquet")
    return {"root": root, "keys": keys, "users": users, "first": first}


def duck() -> duckdb.DuckDBPyConnection:
    # Extensions only from the wheel: a test never downloads one.
    connection = duckdb.connect(config={"autoinstall_known_extensions": False})
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def test_duckdb_sees_typed_columns_and_the_partitions(dataset: dict[str, Any]) -> None:
    root = dataset["root"]
    described = duck().execute(
        "DESCRIBE SELECT * FROM read_parquet(?, hive_partitioning = true)",
        [f"{root}/{FILES}"],
    )
    types = {name: kind for name, kind, *_ in described.fetchall()}

    assert types == {
        "sid": "VARCHAR",
        "account_sid": "VARCHAR",
        "chat_service_sid": "VARCHAR",
        "role_sid": "VARCHAR",
        "identity": "VARCHAR",
        "friendly_name": "VARCHAR",
        "attributes": "JSON",
        "is_online": "BOOLEAN",
        "is_notifiable": "BOOLEAN",
        "date_created": "TIMESTAMP WITH TIME ZONE",
        "date_updated": "TIMESTAMP WITH TIME ZONE",
        "url": "VARCHAR",
        "links": "MAP(VARCHAR, VARCHAR)",
        "service_sid": "VARCHAR",
        "snapshot": "VARCHAR",
    }


def test_the_readme_query_counts_the_latest_published_snapshots(
    dataset: dict[str, Any],
) -> None:
    root, keys, users = dataset["root"], dataset["keys"], dataset["users"]
    unpublished = (
        root / f"service_sid={dataset['first']}" / "snapshot=2099-01-01T000000Z"
    )
    unpublished.mkdir()
    published = root / f"service_sid={dataset['first']}" / f"snapshot={keys[1]}"
    shutil.copy(published / "part-0.parquet", unpublished / "part-0.parquet")
    globs = {"files": f"{root}/{FILES}", "manifests": f"{root}/{MANIFESTS}"}

    try:
        counted = duck().execute(LATEST_PER_SERVICE, globs).fetchall()
    finally:
        shutil.rmtree(unpublished)

    assert counted == [
        (
            sid,
            keys[1],
            len(records),
            sum(
                _path(json.loads(r["attributes"]), "plan") == "enterprise"
                for r in records
            ),
        )
        for sid, records in sorted(users.items())
    ]
    assert any(row[3] for row in counted)


def test_a_snapshot_folder_copied_by_hand_is_no_snapshot_to_any_reader(
    dataset: dict[str, Any],
) -> None:
    """A copy under a later key keeps the manifest of the snapshot it copies."""
    root, keys, first = dataset["root"], dataset["keys"], dataset["first"]
    service = root / f"service_sid={first}"
    copy = service / "snapshot=2099-01-01T000000Z"
    shutil.copytree(service / f"snapshot={keys[1]}", copy)
    globs = {"files": f"{root}/{FILES}", "manifests": f"{root}/{MANIFESTS}"}

    try:
        latest = duck().execute(LATEST_PER_SERVICE, globs).fetchall()
        with pytest.raises(
            conv_frames.SnapshotError,
            match=rf"belongs to snapshot '{keys[1]}' of '{first}', not to the folder "
            "it is in: the folder was copied or renamed by hand; move it back",
        ):
            conv_frames.read_snapshot(root, first)
    finally:
        shutil.rmtree(copy)

    assert [(sid, key) for sid, key, *_ in latest] == [
        (sid, keys[1]) for sid in sorted(dataset["users"])
    ]


def test_the_readme_query_reads_a_dataset_with_a_lenient_export(
    dataset: dict[str, Any], tmp_path: Path
) -> None:
    """#6: a snapshot with attributes that are not JSON keeps them JSON-typed."""
    root = tmp_path / "users"
    shutil.copytree(dataset["root"], root)
    users = [
        user_record(1, attributes='{"plan": "enterprise"}'),
        user_record(2, attributes="{plan: enterprise"),
    ]
    with ScriptedServer([Step(json=users_page(users))]) as server:
        run = conv_frames.export_snapshots(
            root,
            [SERVICE_SID],
            invalid_attributes="null",
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            base_url=server.base_url,
        )
    run.raise_for_failures()
    globs = {"files": f"{root}/{FILES}", "manifests": f"{root}/{MANIFESTS}"}

    counted = duck().execute(LATEST_PER_SERVICE, globs).fetchall()
    kept = duck().execute(
        "SELECT sid, attributes, invalid_attributes_text FROM "
        "read_parquet(?, hive_partitioning = true, union_by_name = true) "
        "WHERE invalid_attributes_text IS NOT NULL",
        [f"{root}/{FILES}"],
    )

    assert (SERVICE_SID, run.snapshot, 2, 1) in counted
    assert len(counted) == 3
    assert kept.fetchall() == [(user_record(2)["sid"], None, "{plan: enterprise")]


def test_duckdb_reads_every_snapshot_but_not_the_staged_file(
    dataset: dict[str, Any],
) -> None:
    root, keys, users = dataset["root"], dataset["keys"], dataset["users"]

    counted = (
        duck()
        .execute(
            "SELECT service_sid, snapshot, count(*) FROM read_parquet(?, "
            "hive_partitioning = true) GROUP BY ALL ORDER BY ALL",
            [f"{root}/{FILES}"],
        )
        .fetchall()
    )

    assert counted == sorted(
        (sid, key, len(records)) for sid, records in users.items() for key in keys
    )


def test_duckdb_values_are_utc_instants_json_and_maps(dataset: dict[str, Any]) -> None:
    root, first, key = dataset["root"], dataset["first"], dataset["keys"][-1]
    rows = (
        duck()
        .execute(
            """
            SELECT sid, date_created, epoch_us(date_updated),
                   json_extract_string(attributes, '$.team.name'),
                   attributes->>'$.plan', links['user_conversations'], is_online
            FROM read_parquet(?, hive_partitioning = true)
            WHERE service_sid = ? AND snapshot = ?
            ORDER BY sid
            """,
            [f"{root}/{FILES}", first, key],
        )
        .fetchall()
    )
    frame = conv_frames.read_snapshot(root, first).sort_values("sid")

    assert [row[0] for row in rows] == frame["sid"].tolist()
    assert [row[1] for row in rows] == frame["date_created"].dt.to_pydatetime().tolist()
    assert all(row[1].utcoffset().total_seconds() == 0 for row in rows)
    assert [row[2] for row in rows] == frame["date_updated"].astype("int64").tolist()
    assert [row[3] for row in rows] == [
        _path(value, "team", "name") for value in frame["attributes"]
    ]
    assert [row[4] for row in rows] == [_path(v, "plan") for v in frame["attributes"]]
    assert any(row[3] is not None for row in rows)
    assert [row[5] for row in rows] == [
        links["user_conversations"] for links in frame["links"]
    ]
    assert {row[6] for row in rows} == {None}


def _path(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return (
        value
        if isinstance(value, str) or value is None
        else orjson.dumps(value).decode()
    )


def test_polars_sees_typed_columns_and_the_partitions(dataset: dict[str, Any]) -> None:
    root, keys, users = dataset["root"], dataset["keys"], dataset["users"]
    scan = pl.scan_parquet(f"{root}/{FILES}", hive_partitioning=True)

    schema = scan.collect_schema()
    frame = scan.collect()

    assert schema["sid"] == pl.String
    assert schema["is_online"] == pl.Boolean
    assert schema["date_created"] == pl.Datetime("us", "UTC")
    assert schema["links"] == pl.Map(pl.String, pl.String)
    assert schema["service_sid"] == pl.String
    # Polars reads the snapshot key as the UTC instant it spells.
    assert schema["snapshot"] == pl.Datetime("us", "UTC")
    assert sorted(frame["snapshot"].unique().to_list()) == [
        datetime.strptime(key, "%Y-%m-%dT%H%M%SZ").replace(tzinfo=UTC) for key in keys
    ]
    assert frame.height == 2 * sum(len(records) for records in users.values())
    by_service = dict(frame.group_by("service_sid").len().iter_rows())
    assert by_service == {sid: 2 * len(records) for sid, records in users.items()}


def test_polars_decodes_the_attributes_json(dataset: dict[str, Any]) -> None:
    root, first = dataset["root"], dataset["first"]
    teams = (
        pl.scan_parquet(f"{root}/{FILES}", hive_partitioning=True)
        .filter(pl.col("service_sid") == first)
        .filter(pl.col("snapshot") == pl.col("snapshot").max())
        .sort("sid")
        .select(pl.col("attributes").ext.storage().str.json_path_match("$.team.name"))
        .collect()
        .to_series()
        .to_list()
    )
    frame = conv_frames.read_snapshot(root, first).sort_values("sid")

    assert teams == [_path(value, "team", "name") for value in frame["attributes"]]


def test_pyarrow_datasets_skip_the_staging_folder_and_the_manifests(
    dataset: dict[str, Any],
) -> None:
    root, users = dataset["root"], dataset["users"]

    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()

    assert table.num_rows == 2 * sum(len(records) for records in users.values())
    assert {"service_sid", "snapshot"} <= set(table.column_names)


def test_each_reader_types_the_partition_keys_as_the_readme_says(
    dataset: dict[str, Any],
) -> None:
    """The contract is the key's text; each reader's type for it is documented."""
    root, keys, users = dataset["root"], dataset["keys"], dataset["users"]
    files, sids = f"{root}/{FILES}", sorted(users)
    as_instants = [
        datetime.strptime(key, "%Y-%m-%dT%H%M%SZ").replace(tzinfo=UTC) for key in keys
    ]

    duckdb_seen = duck().execute(
        "SELECT DISTINCT typeof(service_sid), typeof(snapshot), snapshot "
        "FROM read_parquet(?, hive_partitioning = true) ORDER BY snapshot",
        [files],
    )
    polars_parsed = pl.scan_parquet(files, hive_partitioning=True).collect()
    polars_text = pl.scan_parquet(
        files, hive_partitioning=True, try_parse_hive_dates=False
    ).collect()
    arrow = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    pandas = pd.read_parquet(root)

    assert duckdb_seen.fetchall() == [("VARCHAR", "VARCHAR", key) for key in keys]
    assert polars_parsed.schema["service_sid"] == pl.String
    assert polars_parsed.schema["snapshot"] == pl.Datetime("us", "UTC")
    assert sorted(polars_parsed["snapshot"].unique()) == as_instants
    assert polars_text.schema["snapshot"] == pl.String
    assert sorted(polars_text["snapshot"].unique()) == keys
    assert (
        arrow.schema.field("service_sid").type,
        arrow.schema.field("snapshot").type,
    ) == (
        pa.string(),
        pa.string(),
    )
    assert sorted(set(arrow.column("snapshot").to_pylist())) == keys
    assert isinstance(pandas["snapshot"].dtype, pd.CategoricalDtype)
    assert pandas["snapshot"].cat.categories.tolist() == keys
    assert pandas["service_sid"].cat.categories.tolist() == sids


def test_read_parquet_reads_a_file_a_snapshot_a_service_folder_or_a_dataset(
    dataset: dict[str, Any], tmp_path: Path
) -> None:
    root, (old, new), first = dataset["root"], dataset["keys"], dataset["first"]
    service = root / f"service_sid={first}"
    latest = conv_frames.read_snapshot(root, first)
    previous = conv_frames.read_snapshot(root, first, "previous")
    one = tmp_path / "one"  # a dataset of one service: no SID needed
    shutil.copytree(service, one / service.name)
    read = conv_frames.read_parquet

    frames = {
        "root": read(root, service_sid=first),
        "root previous": read(root, service_sid=first, snapshot="previous"),
        "one-service root": read(one),
        "service": read(service),
        "service by key": read(service, snapshot=old),
        "snapshot": read(service / f"snapshot={old}"),
        "file": read(service / f"snapshot={new}" / "part-0.parquet"),
    }

    for name in ("root", "one-service root", "service", "file"):
        pd.testing.assert_frame_equal(frames[name], latest, obj=name)
    for name in ("root previous", "service by key", "snapshot"):
        pd.testing.assert_frame_equal(frames[name], previous, obj=name)
    assert [frames[name].attrs.get("snapshot") for name in frames] == [
        new,
        old,
        new,
        new,
        old,
        old,
        None,
    ]
    assert len(latest) == len(dataset["users"][first])


@pytest.mark.parametrize(
    ("where", "selection", "message"),
    [
        ("root", {}, "holds 2 services"),
        ("service", {"service_sid": "IS" + "0" * 32}, "is the folder of service_sid"),
        ("snapshot", {"snapshot": "previous"}, "is the folder of snapshot"),
        ("file", {"snapshot": "previous"}, "is a file, which holds one export"),
    ],
)
def test_read_parquet_refuses_a_selection_its_path_contradicts(
    dataset: dict[str, Any], where: str, selection: dict[str, str], message: str
) -> None:
    root, (_, new), first = dataset["root"], dataset["keys"], dataset["first"]
    snapshot = root / f"service_sid={first}" / f"snapshot={new}"
    paths = {
        "root": root,
        "service": snapshot.parent,
        "snapshot": snapshot,
        "file": snapshot / "part-0.parquet",
    }

    with pytest.raises(conv_frames.ConfigurationError, match=message):
        conv_frames.read_parquet(paths[where], **selection)
