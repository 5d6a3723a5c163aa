"""Analysis helpers: the presence summary keeps unknown apart; attributes as columns."""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import conv_frames
from conv_frames import ConfigurationError
from conv_frames._analysis import ALL, NOTIFIABLE_STATES, ONLINE_STATES
from conv_frames._schema import DtypeBackend
from conv_frames.emulator import Emulator

T, F, N = True, False, None


def users_with(online: list[Any], notifiable: list[Any], **extra: Any) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "is_online": pd.array(online, dtype="boolean"),
            "is_notifiable": pd.array(notifiable, dtype="boolean"),
            **extra,
        }
    )
    frame.attrs["presence_fetched_at"] = "2025-06-01T12:00:00+00:00"
    return frame


def expected_summary(counts: dict[tuple[str, str], int], total: int) -> pd.DataFrame:
    rows = [
        (online, notifiable)
        for online in [*ONLINE_STATES, ALL]
        for notifiable in [*NOTIFIABLE_STATES, ALL]
    ]
    frame = pd.DataFrame(rows, columns=["online", "notifiable"])
    frame["online"] = pd.Categorical(
        frame["online"], categories=[*ONLINE_STATES, ALL], ordered=True
    )
    frame["notifiable"] = pd.Categorical(
        frame["notifiable"], categories=[*NOTIFIABLE_STATES, ALL], ordered=True
    )
    frame["users"] = np.array([counts.get(row, 0) for row in rows], dtype="int64")
    frame["share"] = frame["users"] / total
    return frame


# -- presence_summary ---------------------------------------------------------------


def test_summary_counts_unknown_as_its_own_state() -> None:
    users = users_with(
        online=[T, T, T, F, F, N, N, N, N, N],
        notifiable=[T, N, N, F, T, N, N, N, F, T],
    )

    summary = conv_frames.presence_summary(users)

    counts = {
        ("online", "notifiable"): 1,
        ("online", "unknown"): 2,
        ("online", ALL): 3,
        ("offline", "notifiable"): 1,
        ("offline", "not notifiable"): 1,
        ("offline", ALL): 2,
        ("unknown", "notifiable"): 1,
        ("unknown", "not notifiable"): 1,
        ("unknown", "unknown"): 3,
        ("unknown", ALL): 5,
        (ALL, "notifiable"): 3,
        (ALL, "not notifiable"): 2,
        (ALL, "unknown"): 5,
        (ALL, ALL): 10,
    }
    pd.testing.assert_frame_equal(summary, expected_summary(counts, 10))
    assert summary.attrs["presence_fetched_at"] == "2025-06-01T12:00:00+00:00"


def test_margins_answer_the_headline_questions() -> None:
    users = users_with(online=[T, F, N, N], notifiable=[T, T, F, N])
    summary = conv_frames.presence_summary(users)

    online = summary.query("notifiable == 'all' and online != 'all'")
    notifiable = summary.query("online == 'all' and notifiable != 'all'")

    assert online.set_index("online")["share"].to_dict() == {
        "online": 0.25,
        "offline": 0.25,
        "unknown": 0.5,
        "not fetched": 0.0,
    }
    assert notifiable.set_index("notifiable")["users"].to_dict() == {
        "notifiable": 2,
        "not notifiable": 1,
        "unknown": 1,
        "not fetched": 0,
    }
    assert online["share"].sum() == notifiable["share"].sum() == 1.0


def test_summary_by_a_column_has_a_group_for_missing_values() -> None:
    users = users_with(
        online=[T, F, N, T],
        notifiable=[T, T, N, F],
        team=pd.array(["Sales", "Support", None, "Sales"], dtype="string"),
    )

    summary = conv_frames.presence_summary(users, by="team")

    assert len(summary) == 3 * 25
    assert summary["team"].dtype == pd.StringDtype()
    assert summary["team"].iloc[::25].tolist() == ["Sales", "Support", pd.NA]
    sales_online = summary.query(
        "team == 'Sales' and notifiable == 'all' and online != 'all'"
    )
    assert sales_online["users"].tolist() == [2, 0, 0, 0]
    assert sales_online["share"].tolist() == [1.0, 0.0, 0.0, 0.0]
    unknown_team = summary[summary["team"].isna()]
    assert unknown_team.query("online == 'unknown' and notifiable == 'unknown'")[
        "users"
    ].tolist() == [1]


def test_summary_of_nothing_has_zero_counts() -> None:
    summary = conv_frames.presence_summary(users_with([], []))

    assert summary["users"].tolist() == [0] * 25
    assert summary["share"].isna().all()
    assert (
        len(conv_frames.presence_summary(users_with([], [], team=[]), by="team")) == 0
    )


def test_summary_reads_either_backend_and_plain_objects() -> None:
    arrow = pd.DataFrame(
        {
            "is_online": pd.array([True, None], dtype=pd.ArrowDtype(pa.bool_())),
            "is_notifiable": pd.array([None, False], dtype=pd.ArrowDtype(pa.bool_())),
        }
    )
    objects = pd.DataFrame(
        {"is_online": [True, None], "is_notifiable": [None, False]}, dtype=object
    )

    for users in (arrow, objects):
        summary = conv_frames.presence_summary(users).set_index(
            ["online", "notifiable"]
        )
        assert summary.loc[("online", "unknown"), "users"] == 1
        assert summary.loc[("unknown", "not notifiable"), "users"] == 1
        assert summary.loc[("offline", ALL), "users"] == 0


def test_summary_refuses_what_is_not_presence() -> None:
    with pytest.raises(ConfigurationError, match="is_notifiable"):
        conv_frames.presence_summary(pd.DataFrame({"is_online": [True]}))
    with pytest.raises(ConfigurationError, match="'is_online' must hold"):
        conv_frames.presence_summary(
            pd.DataFrame({"is_online": ["yes"], "is_notifiable": [True]})
        )
    with pytest.raises(ConfigurationError, match="team"):
        conv_frames.presence_summary(users_with([T], [T]), by="team")


@pytest.mark.parametrize(
    ("by", "message"),
    [
        (
            "profile",
            "column 'profile' holds dict values (keys 'plan'), which cannot be "
            "grouped by; spread the attributes into columns with "
            "frame.join(flatten_attributes(frame)) and group by one of those, "
            "such as 'attributes.team.name'",
        ),
        ("tags", "column 'tags' holds list values, which cannot be grouped by"),
        (["team", "tags"], "column 'tags' holds list values"),
        ("attributes", "by='attributes' would group by whole JSON documents; spread"),
        ("plan", "by names columns ['plan'], which the frame lacks; to group by an "),
        (["team", "plan"], "by names columns ['plan']"),
        ([["team"]], "by holds a list, which is not a column name; pass a column's"),
    ],
)
def test_summary_refuses_a_by_it_cannot_group_with_a_way_out(
    by: Any, message: str
) -> None:
    users = users_with(
        [T, F],
        [T, N],
        team=["Sales", "Support"],
        profile=[{"plan": "pro"}, {"plan": "free"}],
        tags=[["vip"], []],
        attributes=[{"team": "Sales"}, {"team": "Support"}],
    )

    with pytest.raises(ConfigurationError, match=re.escape(message)):
        conv_frames.presence_summary(users, by=by)


def test_summary_by_a_column_of_objects_that_group_still_works() -> None:
    users = users_with([T, F, N], [T, T, N], plan=["pro", None, 3])

    summary = conv_frames.presence_summary(users, by="plan")

    totals = summary.query("online == 'all' and notifiable == 'all'")
    assert totals["users"].tolist() == [1, 1, 1]


def test_summary_warns_when_presence_was_never_fetched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    users = users_with([N, N], [N, N])
    caplog.set_level(logging.WARNING, logger="conv_frames")

    conv_frames.presence_summary(users)
    assert caplog.records == []  # fetched, and the API said null: no warning
    users.attrs.clear()
    conv_frames.presence_summary(users)

    assert len(caplog.records) == 1
    assert "fill_presence" in caplog.records[0].message


# -- flatten_attributes ---------------------------------------------------------------


def attributes(*documents: Any) -> pd.DataFrame:
    return pd.DataFrame(
        {"attributes": list(documents)}, index=[10 + i for i in range(len(documents))]
    )


def test_nested_keys_become_typed_columns_and_missing_keys_are_null() -> None:
    users = attributes(
        {"team": {"name": "Sales", "region": "emea"}, "seats": 3, "vip": True},
        {"team": {"name": "Support"}, "seats": 5, "score": 4.5},
        {"score": 2},
        {},
    )

    flat = conv_frames.flatten_attributes(users)

    assert flat.columns.tolist() == [
        "attributes.team.name",
        "attributes.team.region",
        "attributes.seats",
        "attributes.vip",
        "attributes.score",
    ]
    assert flat.index.tolist() == [10, 11, 12, 13]
    expected = pd.DataFrame(
        {
            "attributes.team.name": pd.array(
                ["Sales", "Support", None, None], dtype="string"
            ),
            "attributes.team.region": pd.array(
                ["emea", None, None, None], dtype="string"
            ),
            "attributes.seats": pd.array([3, 5, None, None], dtype="Int64"),
            "attributes.vip": pd.array([True, None, None, None], dtype="boolean"),
            "attributes.score": pd.array([None, 4.5, 2.0, None], dtype="Float64"),
        },
        index=[10, 11, 12, 13],
    )
    pd.testing.assert_frame_equal(flat, expected)


def test_non_object_attributes_give_no_columns_and_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    users = attributes(["vip", "beta"], "just text", 42, None, {"plan": "pro"})
    caplog.set_level(logging.INFO, logger="conv_frames")

    flat = conv_frames.flatten_attributes(users)

    assert flat.columns.tolist() == ["attributes.plan"]
    assert flat["attributes.plan"].tolist() == [pd.NA, pd.NA, pd.NA, pd.NA, "pro"]
    assert [record.getMessage() for record in caplog.records] == [
        "3 users' attributes are not a JSON object (a list, a string or a number) "
        "and give no columns"
    ]
    assert flat.attrs == {}


def test_the_join_recipe_keeps_the_users_the_fill_did_not_reach() -> None:
    # pandas keeps attrs through a join only when both sides' are equal.
    users = users_with(
        online=[T, N, N, F],
        notifiable=[T, N, N, F],
        sid=["US1", "US2", "US3", "US4"],
        attributes=[{"team": "a"}, {"team": "a"}, {"team": "b"}, "text"],
    )
    users.attrs["presence_failed_sids"] = ["US3"]
    users.attrs["presence_unfilled_sids"] = ["US4"]

    flat = conv_frames.flatten_attributes(users)
    joined = users.join(flat)
    summary = conv_frames.presence_summary(joined, by="attributes.team")

    assert flat.attrs == users.attrs
    assert joined.attrs == users.attrs
    totals = summary.query("notifiable == 'all'").set_index(
        ["attributes.team", "online"]
    )["users"]
    assert totals[totals > 0].to_dict() == {
        ("a", "online"): 1,
        ("a", "unknown"): 1,
        ("a", ALL): 2,
        ("b", "not fetched"): 1,
        ("b", ALL): 1,
        (pd.NA, "not fetched"): 1,
        (pd.NA, ALL): 1,
    }


def test_lists_mixed_values_and_nulls_stay_python_objects() -> None:
    users = attributes(
        {"tags": ["vip"], "mixed": 1, "nothing": None},
        {"tags": [], "mixed": "one"},
    )

    flat = conv_frames.flatten_attributes(users)

    assert flat.dtypes.tolist() == [np.dtype(object)] * 3
    assert flat["attributes.tags"].tolist() == [["vip"], []]
    assert flat["attributes.mixed"].tolist() == [1, "one"]
    assert flat["attributes.nothing"].tolist() == [None, None]


def test_depth_separator_and_prefix_are_the_callers() -> None:
    users = attributes({"crm": {"owner": {"email": "a@example.com"}, "id": 7}})

    shallow = conv_frames.flatten_attributes(users, max_depth=1)
    two = conv_frames.flatten_attributes(users, max_depth=2, sep="__", prefix=None)

    assert shallow.columns.tolist() == ["attributes.crm"]
    assert shallow["attributes.crm"].iloc[0] == {
        "owner": {"email": "a@example.com"},
        "id": 7,
    }
    assert two.columns.tolist() == ["crm__owner", "crm__id"]
    assert two["crm__owner"].iloc[0] == {"email": "a@example.com"}
    assert str(two["crm__id"].dtype) == "Int64"


def test_empty_objects_are_values_not_columns_to_invent() -> None:
    flat = conv_frames.flatten_attributes(attributes({"team": {}}, {"team": {"a": 1}}))

    assert flat.columns.tolist() == ["attributes.team", "attributes.team.a"]
    assert flat["attributes.team"].tolist() == [{}, None]


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        (
            [{"a.b": 1}, {"a": {"b": 2}}],
            "attribute keys ['a.b'] and ['a', 'b'] both become column 'a.b' when "
            "joined with sep='.'; pass a separator no key contains, such as "
            "sep='/'",
        ),
        (
            [{"a": {"b": {"c": 1}}}, {"x": 1}, {"a": {"b.c": 2}}],
            "attribute keys ['a', 'b', 'c'] and ['a', 'b.c'] both become column "
            "'a.b.c'",
        ),
        (
            [{"a/b": 1, "a.b": 2}, {"a": {"b": 3}}],
            "both become column 'a.b' when joined with sep='.'; pass a separator "
            "no key contains, such as sep='__'",
        ),
    ],
)
def test_paths_that_collide_across_rows_are_refused(
    documents: list[Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        conv_frames.flatten_attributes(attributes(*documents))


def test_another_separator_keeps_colliding_paths_apart() -> None:
    flat = conv_frames.flatten_attributes(
        attributes({"a.b": 1}, {"a": {"b": 2}}), sep="/", prefix=None
    )

    assert flat.to_dict("list") == {"a.b": [1, None], "a/b": [None, 2]}


def test_paths_that_collide_are_refused() -> None:
    users = attributes({"team.name": "x", "team": {"name": "y"}})

    with pytest.raises(ConfigurationError, match=r"'team\.name'"):
        conv_frames.flatten_attributes(users, prefix=None)
    flat = conv_frames.flatten_attributes(users, sep="/", prefix=None)
    assert flat.columns.tolist() == ["team.name", "team/name"]


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_integers_stay_exact_whatever_their_size(backend: DtypeBackend) -> None:
    big, huge = 2**60 + 1, 2**70 + 1
    series = pd.Series(
        [
            {"big": big, "huge": huge, "mixed": 0.5, "far": 0.5, "edge": 2**53},
            {"big": -big, "huge": 1, "mixed": 2**53, "far": big, "edge": 0.25},
            {"big": None, "huge": None, "mixed": None, "far": None, "edge": None},
        ]
    )

    flat = conv_frames.flatten_attributes(series, prefix=None, dtype_backend=backend)

    integer = pd.ArrowDtype(pa.int64()) if backend == "pyarrow" else pd.Int64Dtype()
    number = pd.ArrowDtype(pa.float64()) if backend == "pyarrow" else pd.Float64Dtype()
    assert flat["big"].dtype == integer
    assert flat["big"].tolist()[:2] == [big, -big]
    # Beyond 64 bits, or integers a float cannot hold beside fractions: kept.
    assert flat["huge"].dtype == np.dtype(object)
    assert flat["huge"].tolist() == [huge, 1, None]
    assert flat["far"].dtype == np.dtype(object)
    assert flat["far"].tolist() == [0.5, big, None]
    assert [type(value) for value in flat["far"][:2]] == [float, int]
    # Up to 2**53 a float is exact, so such a mix is a number column.
    assert flat["mixed"].dtype == number
    assert flat["mixed"].tolist()[:2] == [0.5, 2**53]
    assert flat["edge"].dtype == number


def test_series_input_pyarrow_backend_and_big_integers() -> None:
    series = pd.Series([{"n": 1, "big": 2**70, "ok": True}, {"n": None}], name="x")

    flat = conv_frames.flatten_attributes(series, dtype_backend="pyarrow")

    assert flat["attributes.n"].dtype == pd.ArrowDtype(pa.int64())
    assert flat["attributes.ok"].dtype == pd.ArrowDtype(pa.bool_())
    assert flat["attributes.big"].dtype == np.dtype(object)  # beyond int64: kept
    assert flat["attributes.big"].tolist() == [2**70, None]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"sep": ""}, "sep=''"),
        ({"max_depth": 0}, "max_depth=0"),
        ({"prefix": 3}, "prefix=3"),
        ({"dtype_backend": "polars"}, "dtype_backend='polars'"),
    ],
)
def test_bad_flatten_arguments(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        conv_frames.flatten_attributes(attributes({}), **arguments)
    with pytest.raises(ConfigurationError, match="'attributes'"):
        conv_frames.flatten_attributes(pd.DataFrame({"x": [1]}))


def test_group_presence_by_an_attribute_of_emulated_users() -> None:
    with Emulator(users=300, seed=2) as emu:
        users = conv_frames.load_users(
            emu.service_sid,
            account_sid=emu.account_sid,
            auth_token=emu.auth_token,
            base_url=emu.base_url,
            presence=True,
        )
    users = users.join(conv_frames.flatten_attributes(users))

    by_team = conv_frames.presence_summary(users, by="attributes.team.name")

    totals = by_team.query("online == 'all' and notifiable == 'all'")
    assert totals["users"].sum() == 300
    assert totals["attributes.team.name"].isna().sum() == 1  # users with no team
    teams = users["attributes.team.name"].value_counts(dropna=False)
    assert totals.set_index("attributes.team.name")["users"].sort_index().tolist() == (
        teams.sort_index().tolist()
    )


def test_flatten_refuses_what_is_neither_frame_nor_series() -> None:
    with pytest.raises(ConfigurationError, match="must be a DataFrame or a Series"):
        conv_frames.flatten_attributes([{"a": 1}])


@pytest.mark.parametrize(
    ("frame", "kind"),
    [(None, "NoneType"), ([1, 2], "list"), (pd.Series([True]), "Series")],
)
def test_summary_refuses_what_is_not_a_frame(frame: Any, kind: str) -> None:
    message = (
        f"presence_summary expects a DataFrame of users, not {kind}; pass the frame "
        "fill_presence(frame) or load_users(..., presence=True) returns"
    )
    with pytest.raises(ConfigurationError) as caught:
        conv_frames.presence_summary(frame)
    assert str(caught.value) == message


def test_a_by_of_values_is_refused_without_printing_them() -> None:
    users = users_with([T, F], [T, N], sid=["US-secret-1", "US-secret-2"])

    with pytest.raises(ConfigurationError) as caught:
        conv_frames.presence_summary(users, by=users["sid"])

    assert str(caught.value) == (
        "by holds a Series, which is not a column name; pass a column's name, "
        "or a list of names"
    )


def test_users_the_fill_did_not_reach_are_not_fetched_not_unknown() -> None:
    users = users_with(
        online=[T, N, N, N, F],
        notifiable=[N, N, N, N, F],
        sid=["US1", "US2", "US3", "US4", "US5"],
    )
    users.attrs["presence_failed_sids"] = ["US3"]
    users.attrs["presence_unfilled_sids"] = ["US4", "US5"]  # whatever US5 holds

    summary = conv_frames.presence_summary(users)

    counts = {
        ("online", "unknown"): 1,
        ("online", ALL): 1,
        ("unknown", "unknown"): 1,
        ("unknown", ALL): 1,
        ("not fetched", "not fetched"): 3,
        ("not fetched", ALL): 3,
        (ALL, "unknown"): 2,
        (ALL, "not fetched"): 3,
        (ALL, ALL): 5,
    }
    pd.testing.assert_frame_equal(summary, expected_summary(counts, 5))
