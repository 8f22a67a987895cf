"""The four sources read the same trajectories into the same frames (issue 2).

One messy demo database is served five ways — the SQLite file itself, the same rows in a
real PostgreSQL server, a loopback HTTP server answering the agent's documented
``/api/trajectories`` shapes (mirrored by the agent API source), an export file in the
API shape and an export folder in the raw row shape — and every read is compared with
the SQLite file's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from milady_lab.config import Settings
from milady_lab.trajectories import StepsFilter, TrajectorySource, open_source
from milady_lab.trajectories.base import REWARD_FIELDS
from milady_lab.trajectories.parse import llm_calls_from_steps
from milady_lab.trajectories.sqlite import SQLiteSource

from .kit import AgentStandIn, pg_database, raw_rows, write_api_export, write_row_export

OTHERS = ("postgres", "agent_api", "export_api", "export_rows")
#: Reward columns a source cannot fill, because the agent's API does not give them.
NO_REWARDS = {"agent_api": REWARD_FIELDS, "export_api": ("aiJudgeReward",)}
#: Summary columns the agent's listing and detail records do not carry (its REST shapes).
NOT_IN_API = ("aiJudgeReward", "archetype", "episodeLength")


def comparable(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """The columns source ``name`` can be compared on."""
    return frame.drop(NOT_IN_API) if name in ("agent_api", "export_api") else frame


@pytest.fixture(scope="module")
def sources(
    demo_db: Path, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, TrajectorySource]]:
    tmp = tmp_path_factory.mktemp("sources")
    settings = Settings.from_env(
        home=tmp / "home", trajectories=demo_db, cache=tmp / "cache", agent_token="s3cret"
    )
    with AgentStandIn(demo_db, token="s3cret") as agent:
        ids = SQLiteSource(demo_db).summaries_frame().collect()["id"].to_list()
        api_file = write_api_export(agent, ids, tmp / "export.json", wrap=True)
        rows_dir = write_row_export(demo_db, tmp / "rows")
        yield {
            "sqlite": open_source(str(demo_db), settings),
            "postgres": open_source(pg_database(postgres_url, raw_rows(demo_db)), settings),
            "agent_api": open_source(agent.url, settings),
            "export_api": open_source(str(api_file), settings),
            "export_rows": open_source(str(rows_dir), settings),
        }


@pytest.mark.parametrize("name", ("sqlite", *OTHERS))
def test_every_source_is_available(sources: dict[str, TrajectorySource], name: str) -> None:
    assert sources[name].unavailable_reason() is None
    assert sources[name].count() == 400


@pytest.mark.parametrize("name", OTHERS)
def test_same_summaries_frame(sources: dict[str, TrajectorySource], name: str) -> None:
    expected = comparable(sources["sqlite"].summaries_frame().collect(), name)
    got = comparable(sources[name].summaries_frame().collect(), name)
    assert got.schema == expected.schema
    assert got.equals(expected)


@pytest.mark.parametrize("name", OTHERS)
def test_same_pages(sources: dict[str, TrajectorySource], name: str) -> None:
    for limit, offset in ((100, 0), (1, 0), (37, 13), (500, 0), (50, 380), (10, 399), (5, 400)):
        expected = comparable(sources["sqlite"].summaries(limit, offset), name)
        got = comparable(sources[name].summaries(limit, offset), name)
        assert got.equals(expected), (limit, offset)


@pytest.mark.parametrize("name", OTHERS)
def test_same_llm_calls_frame(sources: dict[str, TrajectorySource], name: str) -> None:
    expected = sources["sqlite"].llm_calls_frame().collect()
    got = sources[name].llm_calls_frame().collect()
    assert expected.height > 1500  # ~5 calls a trajectory, less the mess
    assert got.schema == expected.schema
    assert got.equals(expected)


@pytest.mark.parametrize("name", OTHERS)
def test_same_steps_order_and_calls(sources: dict[str, TrajectorySource], name: str) -> None:
    def read(source: TrajectorySource) -> tuple[pl.DataFrame, pl.DataFrame]:
        batches = list(source.iter_steps(batch_rows=64))
        assert all(b.height <= 64 for b in batches)
        steps = pl.concat(batches)
        return steps.select("id", "startTime"), llm_calls_from_steps(steps)

    expected_order, expected_calls = read(sources["sqlite"])
    order, calls = read(sources[name])
    assert order.equals(expected_order)
    assert calls.equals(expected_calls)


@pytest.mark.parametrize("name", OTHERS)
def test_same_details(sources: dict[str, TrajectorySource], name: str) -> None:
    frame = sources["sqlite"].summaries_frame().collect()
    lacks = NOT_IN_API if name in ("agent_api", "export_api") else ()
    for tid in frame["id"].to_list()[::7]:
        got, expected = sources[name].detail(tid), sources["sqlite"].detail(tid)
        assert got is not None and expected is not None
        for key in lacks:
            got.pop(key), expected.pop(key)
        assert got == expected, tid
    assert sources[name].detail("no-such-id") is None


@pytest.mark.parametrize("name", ("sqlite", *OTHERS))
def test_steps_filter_selects_in_the_source(
    sources: dict[str, TrajectorySource], name: str
) -> None:
    everything = pl.concat(list(sources["sqlite"].iter_steps()))
    lo, hi = everything["startTime"].quantile(0.2), everything["startTime"].quantile(0.8)
    assert lo is not None and hi is not None
    where = StepsFilter(
        sources=("chat", "discord"), statuses=("completed",), start_ms=int(lo), end_ms=int(hi)
    )
    expected = everything.filter(
        pl.col("source").is_in(["chat", "discord"])
        & (pl.col("status") == "completed")
        & pl.col("startTime").is_between(int(lo), int(hi), closed="left")
    )
    got = pl.concat(list(sources[name].iter_steps(batch_rows=50, where=where)))
    assert 0 < got.height < everything.height / 2
    # Same rows in listing order (a mirror may re-serialise the steps: compare their calls).
    # The agent's REST API carries fewer rewards: its listing none (the mirror reads 0),
    # its detail (and so its export) only totalReward.
    unshared = ["steps", *NO_REWARDS.get(name, ())]
    assert got.drop(unshared).equals(expected.drop(unshared))
    assert llm_calls_from_steps(got).equals(llm_calls_from_steps(expected))
    nothing = StepsFilter(sources=("no-such-source", "'; DROP TABLE trajectories; --"))
    assert list(sources[name].iter_steps(where=nothing)) == []
    assert sources[name].count() == 400
