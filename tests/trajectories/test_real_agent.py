"""milady-lab against the agent as it really is (issue 23).

Trajectories are written by the agent's published code (@elizaos/agent 2.0.0-beta.2's
``DatabaseTrajectoryLogger`` and 30-day prune, @elizaos/core 2.0.0-alpha.537's
``TrajectoriesService``) into real PGlite folders (PGlite 0.4.6, the agent's version) and
real PostgreSQL databases, then read through milady-lab: listing, calls, rewards, archive,
builds and filters. Nothing here types a row to look like the agent's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from milady_lab.config import Settings
from milady_lab.errors import InputError, UpstreamError
from milady_lab.service import TrainingService
from milady_lab.trajectories import open_source

from . import agent
from .kit import pg_database

CASES = (("pglite", "agent"), ("pglite", "core"), ("postgres", "agent"), ("postgres", "core"))


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent's packages installed; a cache folder shared by the tests (milady-lab
    installs its PGlite bridge there once)."""
    agent.install()
    return tmp_path_factory.mktemp("cache")


@dataclasses.dataclass
class Written:
    writer: str
    plan: dict
    ids: list[str]
    settings: Settings

    @property
    def archived(self) -> set[str]:
        return {
            t for t, p in zip(self.ids, self.plan["trajectories"], strict=True) if p.get("daysAgo")
        }


def _written(kit: Path, tmp: Path, target_kind: str, writer: str, postgres_url: str) -> Written:
    if target_kind == "pglite":
        target, spec = {"pglite": str(tmp / "db")}, f"pglite:{tmp / 'db'}"
    else:
        url = pg_database(postgres_url, [], table=False)
        target, spec = {"postgres": url}, url
    the_plan = agent.plan(writer, target, tmp / "ws")
    ids = agent.write(the_plan)
    settings = Settings.from_env(home=tmp / "home", trajectories=spec, cache=kit)
    settings = dataclasses.replace(settings, archive=tmp / "ws" / "trajectory-archive")
    return Written(writer, the_plan, ids, settings)


@pytest.fixture(scope="module", params=CASES, ids=["-".join(c) for c in CASES])
def written(
    request: pytest.FixtureRequest,
    kit: Path,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str,
) -> Iterator[Written]:
    kind, writer = request.param
    yield _written(kit, tmp_path_factory.mktemp(f"{kind}-{writer}"), kind, writer, postgres_url)


@pytest.fixture(scope="module")
def service(written: Written) -> Iterator[TrainingService]:
    svc = TrainingService(written.settings, reconcile=False)
    yield svc
    svc.source.close()


def test_listing_holds_every_trajectory_written(written: Written, service: TrainingService) -> None:
    body = service.list_trajectories(limit=500)
    items = {t["id"]: t for t in body["trajectories"]}
    assert body["total"] == len(written.ids) == len(items)
    assert set(items) == set(written.ids)
    assert {t for t, i in items.items() if i["archived"]} == written.archived
    if written.writer == "agent":
        assert len(written.archived) == 2  # the agent's prune moved them: still listed
    for tid, traj in zip(written.ids, written.plan["trajectories"], strict=True):
        item = items[tid]
        assert item["source"] == traj["source"]
        assert item["status"] == traj.get("status", "completed")
        assert (item.scenario_id, item.batch_id) == (
            traj.get("scenarioId"),
            traj.get("batchId"),
        )
        assert item["llmCallCount"] == sum(len(s["calls"]) for s in traj["steps"])
        if written.writer == "core":  # the core's service sums step rewards
            rewards = [s.get("reward", 0.0) for s in traj["steps"]]
            assert item["totalReward"] == pytest.approx(sum(rewards))


def test_every_call_comes_through(written: Written, service: TrainingService) -> None:
    calls = service.llm_calls_frame().collect()
    got: dict[str, list[tuple]] = {}
    for row in calls.sort("trajectoryId", "timestamp", "callIndex").iter_rows(named=True):
        names = tuple(c["name"] for c in json.loads(row["toolCalls"] or "[]"))
        got.setdefault(row["trajectoryId"], []).append(
            (row["userPrompt"], row["response"] or "", names)
        )
    assert got == agent.expected_calls(written.plan, written.ids)
    if written.writer == "agent":
        assert sum(1 for c in got.values() for call in c if call[2]) == 2  # tool calls kept
    detail = service.get_trajectory(written.ids[1])["trajectory"]
    assert [a["providerName"] for a in detail["providerAccesses"]] == ["TIME"]


def test_build_gives_one_example_per_usable_call(
    written: Written, service: TrainingService
) -> None:
    per_traj = agent.expected_calls(written.plan, written.ids)
    everything = service.build_dataset({})["dataset"]
    assert everything["exampleCount"] == sum(len(c) for c in per_traj.values())
    assert everything["skippedRows"] == 0
    scn_a = service.build_dataset({"scenarioId": "scn-a"})["dataset"]
    in_a = [
        t
        for t, p in zip(written.ids, written.plan["trajectories"], strict=True)
        if p.get("scenarioId") == "scn-a"
    ]
    assert scn_a["trajectoryCount"] == len(in_a)
    assert scn_a["exampleCount"] == sum(len(per_traj[t]) for t in in_a)
    both = service.preview_dataset({"scenarioId": ["scn-a", "scn-b"], "batchId": "batch-1"})
    assert both["trajectoryCount"] == 6
    live = service.preview_dataset({"includeArchived": False})
    assert live["trajectoryCount"] == len(written.ids) - len(written.archived)


def test_labels_by_reward_only_where_the_agent_recorded_one(
    written: Written, service: TrainingService
) -> None:
    """The agent's table gives ``total_reward`` a default of 0, which is what a trajectory
    nothing rewarded carries: a KTO build labels by reward only the rewarded ones."""
    if written.writer == "agent":  # its logger records no rewards at all
        with pytest.raises(InputError, match="labelThreshold labels by totalReward"):
            service.build_dataset({"kind": "labelled", "labelThreshold": 1.2})
        return
    rec = service.build_dataset({"kind": "labelled", "labelThreshold": 1.2})["dataset"]
    lines = [
        json.loads(line)
        for name in ("train.jsonl", "valid.jsonl")
        for line in (Path(rec["path"]) / name).read_text().splitlines()
    ]
    totals = {
        tid: sum(s.get("reward", 0.0) for s in p["steps"])
        for tid, p in zip(written.ids, written.plan["trajectories"], strict=True)
    }
    by_traj: dict[str, set[str]] = {}
    for ln in lines:
        by_traj.setdefault(ln["metadata"]["trajectoryId"], set()).add(ln["metadata"]["rule"])
    unrewarded = written.ids[agent.UNREWARDED]
    # its replies are labelled by the checks they pass (their <response> parses), not as
    # undesirable by a reward of 0
    assert totals[unrewarded] == 0 and by_traj.pop(unrewarded) == {"checksPassed"}
    assert by_traj == {
        tid: {"rewardDesirable" if total >= 1.2 else "rewardUndesirable"}
        for tid, total in totals.items()
        if tid != unrewarded
    }


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_never_writes_to_the_agents_pglite_even_while_it_runs(kit: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    the_plan = agent.plan("agent", {"pglite": str(db)})
    with agent.holding(the_plan) as running:
        lock = (db / "postmaster.pid").read_text()
        assert lock.split()[0] == str(running.pid)
        before = _tree_hash(db)
        settings = Settings.from_env(home=tmp_path / "h", trajectories=str(db), cache=kit)
        svc = TrainingService(settings, reconcile=False)
        assert svc.list_trajectories()["total"] == len(the_plan["trajectories"])
        assert svc.build_dataset({})["dataset"]["exampleCount"] > 0
        svc.source.close()
        assert _tree_hash(db) == before
        assert (db / "postmaster.pid").read_text() == lock


def test_rest_mirror_equals_the_database(kit: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    the_plan = agent.plan("agent", {"pglite": str(db)})
    ids = agent.write(the_plan)
    direct = open_source(f"pglite:{db}", Settings.from_env(home=tmp_path / "h1", cache=kit))
    want_calls = direct.llm_calls_frame().collect().sort("trajectoryId", "callIndex")
    want = direct.summaries_frame().collect().select("id", "source", "status", "llmCallCount")
    direct.close()
    for export in (True, False):
        with agent.serving({"pglite": str(db)}, export=export) as served:
            settings = Settings.from_env(
                home=tmp_path / f"h-{export}", trajectories=served.url, agent_token="s3cret"
            )
            mirror = open_source(served.url, settings)
            got = mirror.summaries_frame().collect()
            assert set(got["id"]) == set(ids)
            assert got.select(want.columns).equals(want)  # the listing's source, not "chat"
            calls = mirror.llm_calls_frame().collect().sort("trajectoryId", "callIndex")
            assert calls.select(want_calls.columns).equals(want_calls)
            assert calls["toolCalls"].drop_nulls().len() == 2
            tid = ids[1]
            assert [a["providerName"] for a in mirror.detail(tid)["providerAccesses"]] == ["TIME"]
            before = len(served.requests())
            assert mirror.sync(force=True) is None
            assert len(served.requests()) - before <= 2  # nothing new: the sync converged


def test_zero_config_finds_the_desktop_pglite(kit: Path, tmp_path: Path) -> None:
    state, ws = tmp_path / "state", tmp_path / "workspace"
    state.mkdir()
    (state / "milady.json").write_text(json.dumps({"agents": {"defaults": {"workspace": str(ws)}}}))
    db = ws / ".eliza" / ".elizadb"
    db.parent.mkdir(parents=True)  # the agent makes its workspace before PGlite's folder
    ids = agent.write(agent.plan("agent", {"pglite": str(db)}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILADY_", "ELIZA_"))}
    env.update(
        MILADY_STATE_DIR=str(state),
        MILADY_LAB_HOME=str(tmp_path / "home"),
        MILADY_LAB_CACHE=str(kit),
        HOME=str(tmp_path),
    )
    env.pop("POSTGRES_URL", None), env.pop("PGLITE_DATA_DIR", None)
    cli = [str(Path(sys.executable).with_name("milady-lab"))]
    listed = subprocess.run(
        [*cli, "trajectories", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert {t["id"] for t in json.loads(listed.stdout)["trajectories"]} == set(ids)
    status = subprocess.run(
        [*cli, "status", "--json"], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    body = json.loads(status.stdout)
    assert body["trajectorySource"] == f"pglite:{db}"
    assert "default PGlite folder" in body["trajectorySourceFoundBy"]


def test_unreadable_sources_fail_with_the_cause(kit: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    ws = tmp_path / "ws"
    the_plan = agent.plan("agent", {"pglite": str(db)}, ws)
    agent.write(the_plan)
    archive = ws / "trajectory-archive"
    settings = dataclasses.replace(
        Settings.from_env(home=tmp_path / "h", trajectories=str(db), cache=kit),
        archive=archive,
    )
    # A corrupt line in an archive file: skipped and counted, the rest kept.
    (blob,) = archive.glob("*.jsonl.gz")
    import gzip

    lines = gzip.decompress(blob.read_bytes()).decode().splitlines()
    blob.write_bytes(gzip.compress(("\n".join([lines[0], "{torn", *lines[1:]]) + "\n").encode()))
    svc = TrainingService(settings, reconcile=False)
    record = svc.build_dataset({})["dataset"]
    assert record["skippedRows"] == 1
    assert svc.list_trajectories()["total"] == len(the_plan["trajectories"])
    # An archive file that is not gzip at all: an error naming it.
    blob.write_bytes(b"not gzip")
    svc.source.archive._checked = 0.0  # look again now, not in 5 s
    with pytest.raises(UpstreamError, match="archive file"):
        svc.list_trajectories()
    svc.source.close()
    # A PGlite folder PGlite cannot open: an error naming PGlite, never 0 trajectories.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "PG_VERSION").write_text("17\n")
    (broken / "base").mkdir()
    bad = TrainingService(
        Settings.from_env(home=tmp_path / "h2", trajectories=str(broken), cache=kit),
        reconcile=False,
    )
    with pytest.raises(UpstreamError, match="PGlite"):
        bad.list_trajectories()
