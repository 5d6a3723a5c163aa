"""Change detection between two users frames, two snapshots, or two files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scripted import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    SERVICE_SID,
    ScriptedServer,
    Step,
    user_record,
    user_sid,
    users_page,
)

import conv_frames
from conv_frames._cli import main

OLD = [
    user_record(1),
    user_record(2, attributes='{"team": "blue", "level": 2}'),
    user_record(3, friendly_name=None),
    user_record(4, date_updated="2021-01-01T10:00:00Z"),
    user_record(5),
]
NEW = [
    # 1 removed; 2 keeps its attributes in another key order, and another spacing
    user_record(2, attributes='{ "level": 2, "team": "blue" }'),
    user_record(3, friendly_name="Now named", role_sid="RL" + "d" * 32),
    # the same instant, written with an offset
    user_record(4, date_updated="2021-01-01T11:00:00+01:00"),
    user_record(5, attributes='{"team": "red"}', url="https://elsewhere.example/x"),
    user_record(6),
]


def frame(records: list[dict[str, Any]], **options: Any) -> pd.DataFrame:
    return conv_frames.users_frame(records, **options)


def test_added_removed_and_changed_users_with_the_fields_that_changed() -> None:
    diff = conv_frames.diff_users(frame(OLD), frame(NEW))

    assert (diff.added, diff.removed, diff.changed, diff.unchanged) == (1, 1, 2, 2)
    expected = pd.DataFrame(
        {
            "sid": pd.array([user_sid(n) for n in (6, 1, 3, 5)], dtype="string"),
            "identity": pd.array(
                [f"agent-{n:03d}" for n in (6, 1, 3, 5)], dtype="string"
            ),
            "change": pd.Categorical(
                ["added", "removed", "changed", "changed"],
                categories=["added", "removed", "changed"],
            ),
            "changed_fields": [[], [], ["role_sid", "friendly_name"], ["attributes"]],
        }
    )
    pd.testing.assert_frame_equal(diff.changes, expected)
    assert diff.summary == (
        "1 added, 1 removed, 2 changed (attributes 1, friendly_name 1, role_sid 1), "
        "2 unchanged"
    )
    assert str(diff) == diff.summary
    assert diff.has_changes


def test_derived_columns_are_compared_only_when_asked() -> None:
    diff = conv_frames.diff_users(frame(OLD), frame(NEW), columns=["url", "attributes"])

    fields = dict(zip(diff.changes["sid"], diff.changes["changed_fields"], strict=True))
    assert fields[user_sid(5)] == ["url", "attributes"]
    assert diff.field_counts == {"attributes": 1, "url": 1}
    with pytest.raises(conv_frames.ConfigurationError, match="not in both frames"):
        conv_frames.diff_users(frame(OLD), frame(NEW), columns=["tier"])


def test_the_same_users_in_either_backend_have_no_changes() -> None:
    diff = conv_frames.diff_users(
        frame(NEW), frame(NEW, dtype_backend="pyarrow"), columns=None
    )
    with_links = conv_frames.diff_users(
        frame(NEW, dtype_backend="pyarrow"),
        frame(NEW),
        columns=["links", "url", "date_updated", "is_online", "attributes"],
    )

    assert (diff.changed, diff.unchanged, diff.has_changes) == (0, 5, False)
    assert diff.summary == "0 added, 0 removed, 0 changed, 5 unchanged"
    assert (with_links.changed, with_links.unchanged) == (0, 5)
    assert with_links.changes.empty
    assert list(with_links.changes.columns) == [
        "sid",
        "identity",
        "change",
        "changed_fields",
    ]


def test_timestamps_compare_as_instants_whatever_their_zone_or_unit() -> None:
    old = frame(OLD)
    paris = frame(OLD)
    paris["date_created"] = paris["date_created"].dt.tz_convert("Europe/Paris")
    paris["date_updated"] = (
        paris["date_updated"]
        .dt.tz_convert("Asia/Tokyo")
        .astype("datetime64[ns, Asia/Tokyo]")
    )
    arrow = frame(OLD, dtype_backend="pyarrow")
    arrow["date_created"] = arrow["date_created"].astype(
        pd.ArrowDtype(pa.timestamp("ms", tz="America/New_York"))
    )
    naive = frame(OLD)
    naive["date_created"] = naive["date_created"].dt.tz_localize(None)  # read as UTC
    moved = frame(OLD)
    third = moved["sid"] == user_sid(3)
    moved["date_created"] = moved["date_created"].mask(
        third, moved["date_created"] + pd.Timedelta(microseconds=1)
    )

    for same in (paris, arrow, naive):
        diff = conv_frames.diff_users(old, same)
        assert (diff.changed, diff.unchanged) == (0, 5)
    diff = conv_frames.diff_users(paris, moved)
    assert diff.changes["sid"].tolist() == [user_sid(3)]
    assert diff.field_counts == {"date_created": 1}


def test_nulls_equal_nulls_whatever_their_spelling() -> None:
    old = frame([user_record(1, friendly_name=None, attributes="null", tier=None)])
    new = frame([user_record(1, friendly_name=None, attributes="null", tier=None)])
    old["tier"] = pd.array([None], dtype="Int64")
    new["tier"] = pd.Series([float("nan")])
    new["date_updated"] = pd.Series([pd.NaT], dtype="datetime64[ns, UTC]")
    old["date_updated"] = pd.array([None], dtype=pd.ArrowDtype(pa.timestamp("us")))

    diff = conv_frames.diff_users(old, new)

    assert (diff.changed, diff.unchanged) == (0, 1)
    assert conv_frames.diff_users(old, frame([user_record(1)])).field_counts == {
        "attributes": 1,
        "date_updated": 1,
        "friendly_name": 1,
    }


def test_numbers_compare_by_value_and_other_json_types_do_not_mix() -> None:
    old = frame(
        [
            user_record(1, attributes='{"level": 1, "scores": [2, 3.5]}'),
            user_record(2, attributes='{"level": 1}'),
            user_record(3, attributes='{"level": 1}'),
            user_record(4, attributes='{"level": 1.5}'),
        ]
    )
    new = frame(
        [
            user_record(1, attributes='{"scores": [2.0, 3.5], "level": 1.0}'),
            user_record(2, attributes='{"level": true}'),
            user_record(3, attributes='{"level": "1"}'),
            user_record(4, attributes='{"level": 1}'),
        ]
    )
    old["tier"] = pd.array([1, 2, None, 4], dtype="Int64")
    new["tier"] = pd.array([1.0, 2.0, None, 4.5], dtype="Float64")

    diff = conv_frames.diff_users(old, new)

    fields = dict(zip(diff.changes["sid"], diff.changes["changed_fields"], strict=True))
    assert fields == {
        user_sid(2): ["attributes"],
        user_sid(3): ["attributes"],
        user_sid(4): ["attributes", "tier"],
    }
    assert diff.unchanged == 1


def test_a_column_added_or_removed_is_reported_not_compared() -> None:
    old = frame([user_record(1, plan="gold")])
    new = frame([user_record(1, tier=2)])
    new.attrs["snapshot"] = "2026-12-05T020000Z"

    diff = conv_frames.diff_users(old, new)

    assert (diff.changed, diff.columns_added, diff.columns_removed) == (
        0,
        ("tier",),
        ("plan",),
    )
    assert diff.summary == (
        "frame -> 2026-12-05T020000Z: 0 added, 0 removed, 0 changed, 1 unchanged; "
        "columns added: tier; columns removed: plan"
    )


DUPLICATED_OLD = [
    user_record(1, identity="first-spelling"),
    user_record(2),
    user_record(1),
]
DUPLICATED_NEW = [
    user_record(1),
    user_record(2, friendly_name="Early"),
    user_record(2),
    user_record(1, friendly_name="Renamed"),
]
DUPLICATES_SUMMARY = (
    "0 added, 0 removed, 1 changed (friendly_name 1), 1 unchanged; "
    "duplicate SID rows (last compared): 1 old, 2 new"
)


def test_repeated_sids_are_compared_by_their_last_row_and_counted_per_side(
    caplog: pytest.LogCaptureFixture,
) -> None:
    old, new = frame(DUPLICATED_OLD), frame(DUPLICATED_NEW)
    caplog.clear()  # building the frames warns too
    with caplog.at_level("WARNING", logger="conv_frames"):
        diff = conv_frames.diff_users(old, new)

    assert diff.summary == DUPLICATES_SUMMARY
    assert (diff.old_duplicates, diff.new_duplicates) == (1, 2)
    assert diff.changes.attrs["duplicate_sids"] == {"old": 1, "new": 2}
    assert diff.changes[["sid", "identity", "change"]].astype(str).values.tolist() == [
        [user_sid(1), "agent-001", "changed"]
    ]
    assert [r.getMessage() for r in caplog.records] == [
        "repeated SIDs: comparing the last row of each (1 duplicate rows in the old "
        "frame, 2 in the new)"
    ]


def test_the_diff_command_compares_snapshots_that_repeat_sids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = export(tmp_path, DUPLICATED_OLD), export(tmp_path, DUPLICATED_NEW)

    assert main(["diff", "--dataset", str(tmp_path)]) == 0

    assert capsys.readouterr().out == f"{first} -> {second}: {DUPLICATES_SUMMARY}\n"


def export(root: Path, records: list[dict[str, Any]]) -> str:
    with ScriptedServer([Step(json=users_page(records))]) as server:
        run = conv_frames.export_snapshots(
            root,
            [SERVICE_SID],
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            base_url=server.base_url,
        )
    run.raise_for_failures()
    return run.snapshot


def export_file(path: Path, records: list[dict[str, Any]]) -> None:
    with ScriptedServer([Step(json=users_page(records))]) as server:
        conv_frames.export_users(
            SERVICE_SID,
            path,
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            base_url=server.base_url,
        )


def test_two_snapshots_and_a_snapshot_with_a_fresh_frame(tmp_path: Path) -> None:
    first, second = export(tmp_path, OLD), export(tmp_path, NEW)

    diff = conv_frames.diff_snapshots(tmp_path)
    against_frame = conv_frames.diff_snapshots(
        tmp_path, SERVICE_SID, old=second, new=frame(NEW[:2])
    )

    assert diff.summary.startswith(
        f"{first} -> {second}: 1 added, 1 removed, 2 changed"
    )
    assert (against_frame.removed, against_frame.changed) == (3, 0)
    assert against_frame.summary.startswith(f"{second} -> frame: 0 added, 3 removed")


def test_the_diff_command_prints_the_summary_lists_and_writes_the_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "users"
    root.mkdir()
    first, second = export(root, OLD), export(root, NEW)

    assert main(["diff", "--dataset", str(root), "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{first} -> {second}: 1 added, 1 removed, 2 changed")
    assert out[1:] == [
        f"added    {user_sid(6)} agent-006",
        f"removed  {user_sid(1)} agent-001",
        f"changed  {user_sid(3)} agent-003 role_sid,friendly_name",
        f"changed  {user_sid(5)} agent-005 attributes",
    ]

    old_file, new_file = tmp_path / "old.parquet", tmp_path / "new.parquet"
    export_file(old_file, OLD)
    export_file(new_file, NEW)
    csv = tmp_path / "changes.csv"
    argv = ["diff", str(old_file), str(new_file), "--output", str(csv)]
    assert main([*argv, "--columns", "attributes"]) == 0
    assert capsys.readouterr().out == (
        "1 added, 1 removed, 1 changed (attributes 1), 3 unchanged\n"
    )
    written = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert written.to_dict("records")[-1] == {
        "sid": user_sid(5),
        "identity": "agent-005",
        "change": "changed",
        "changed_fields": "attributes",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["diff"], "diff compares two Parquet files"),
        (["diff", "one.parquet"], "diff compares two Parquet files"),
        (["diff", "a", "b", "--dataset", "x"], "two files or --dataset, not both"),
        (["diff", "nowhere.parquet", "b"], "'nowhere.parquet' does not exist"),
        (["diff", ".", "b"], "'.' is a folder, not a Parquet file"),
    ],
)
def test_the_diff_command_refuses_what_it_cannot_compare(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_diff_output_is_checked_before_any_work_and_written_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_file, new_file = tmp_path / "old.parquet", tmp_path / "new.parquet"
    export_file(old_file, OLD)
    export_file(new_file, NEW)
    argv = ["diff", str(old_file), str(new_file), "--output"]
    missing, text = tmp_path / "nodir" / "changes.csv", tmp_path / "changes.txt"
    taken = tmp_path / "taken.csv"
    taken.mkdir()  # a folder where the file should go: refused, not replaced

    assert main([*argv, str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"conv-frames: ConfigurationError: the folder of --output {str(missing)!r} "
        "does not exist; create it first\n"
    )
    assert main([*argv, str(text)]) == 2
    assert capsys.readouterr().err == (
        f"conv-frames: ConfigurationError: --output {str(text)!r} names no format "
        "conv-frames writes here; end it in .csv or .parquet\n"
    )
    assert main([*argv, str(taken)]) == 7
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"conv-frames: ExportError: {taken} exists and is not a regular file (a "
        "folder or a device); refusing to replace it, choose another path\n"
    )
    assert main([*argv, str(tmp_path / "changes.PARQUET")]) == 0
    written = pd.read_parquet(tmp_path / "changes.PARQUET")

    assert written["change"].tolist() == ["added", "removed", "changed", "changed"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "changes.PARQUET",
        "new.parquet",
        "old.parquet",
        "taken.csv",
    ]
    assert list(taken.iterdir()) == []


def test_diff_of_files_that_are_no_users_export_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_file, text, other = (tmp_path / name for name in ("n.parquet", "a.csv", "o.pq"))
    export_file(new_file, NEW)
    text.write_text("sid,identity\n")
    pq.write_table(pa.table({"sid": ["US1"]}), other)

    assert main(["diff", str(text), str(new_file)]) == 2
    assert f"ConfigurationError: {text} is not a readable Parquet file" in (
        capsys.readouterr().err
    )
    assert main(["diff", str(other), str(new_file)]) == 2
    assert f"ConfigurationError: {other} is not a users export" in (
        capsys.readouterr().err
    )


def test_diff_of_a_service_folder_names_the_dataset_root_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export(tmp_path, OLD)
    export(tmp_path, NEW)
    service = tmp_path / f"service_sid={SERVICE_SID}"

    expected = (
        f"conv-frames: ConfigurationError: {service} is the folder of service "
        f"{SERVICE_SID} inside a dataset; pass the dataset root, {tmp_path}\n"
    )

    assert main(["diff", "--dataset", str(service)]) == 2
    assert capsys.readouterr().err == expected
    # Naming the service too changes nothing: the path is still not the root.
    assert main(["diff", "--dataset", str(service), "--service", SERVICE_SID]) == 2
    assert capsys.readouterr().err == expected


def test_a_folder_that_is_no_dataset_root_is_named_as_such(tmp_path: Path) -> None:
    export(tmp_path, OLD)
    (key,) = [p.name for p in (tmp_path / f"service_sid={SERVICE_SID}").iterdir()]
    stray = tmp_path / "elsewhere" / "snapshot=latest"
    shutil.copytree(tmp_path / f"service_sid={SERVICE_SID}" / key, stray)

    for path in (stray, stray.parent):
        with pytest.raises(
            conv_frames.ConfigurationError,
            match=re.escape(
                f"{path} holds no service_sid=IS... folders, so it is not a "
                "conv-frames dataset root; pass the folder given to "
                "conv-frames export --dataset"
            ),
        ):
            conv_frames.read_parquet(path)
