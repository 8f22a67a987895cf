"""The held-out split (issue 26): by default a build trains on older trajectories and
validates on the newest, keeping each trajectory's examples together; ``split: "hash"``
is the content-hash split of before, and the time split falls back to it when the start
times cannot tell old from new."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from test_datasets import Lab, call

from milady_lab.agent_compat import dataset_record
from milady_lab.api import decode, schema
from milady_lab.datasets import build as ds
from milady_lab.errors import InputError
from milady_lab.state import StateStore


@pytest.fixture
def lab(tmp_path):
    def make(rows):
        return Lab(tmp_path, rows)

    return make


def _by_trajectory(l_: Lab, rec) -> dict[str, set[str]]:
    """trajectoryId → the files its examples are in."""
    where: dict[str, set[str]] = {}
    for name in ("train", "valid"):
        for ex in l_.examples(rec, name):
            where.setdefault(ex["metadata"]["trajectoryId"], set()).add(name)
    return where


def test_time_split_holds_out_the_newest_trajectories(lab):
    # 40 trajectories of 2 examples each, t39 the newest: 10% of 80 is the 4 newest.
    starts = {f"t{i:02d}": 1_000 + 10 * i for i in range(40)}
    rows = [
        (tid, start, [call(f"{tid} q1", "a1"), call(f"{tid} q2", "a2")])
        for tid, start in starts.items()
    ]
    l_ = lab(rows)
    rec = l_.build()
    assert rec["split"] == "time" and "warnings" not in rec
    assert (rec["trainCount"], rec["validCount"]) == (72, 8)
    where = _by_trajectory(l_, rec)
    held = {tid for tid, files in where.items() if files == {"valid"}}
    newest = sorted(starts, key=starts.get)[-4:]
    assert held == set(newest)
    assert rec["heldOutFrom"] == min(starts[t] for t in newest)
    assert all(starts[t] < rec["heldOutFrom"] for t, f in where.items() if f == {"train"})
    # The stored record and the folder's metadata say the same.
    stored = l_.store.get_dataset(rec["id"])
    assert (stored["split"], stored["heldOutFrom"]) == ("time", rec["heldOutFrom"])
    meta = json.loads((Path(rec["path"]) / "metadata.json").read_text())
    assert meta["split"] == "time" and str(rec["heldOutFrom"]) in meta["format"]["split"]


def test_a_trajectory_never_straddles_the_split(lab, monkeypatch):
    monkeypatch.setattr(ds, "BATCH_ROWS", 7)  # trajectories arrive over several batches
    # Uneven examples per trajectory, and pairs of trajectories sharing a start time.
    calls = [[call(f"t{i} q{k}", f"a{k}") for k in range(i % 5 + 1)] for i in range(30)]
    rows = [(f"t{i:02d}", 5_000 + 100 * (i // 2), calls[i]) for i in range(30)]
    l_ = lab(rows)
    rec = l_.build()
    assert rec["split"] == "time"
    where = _by_trajectory(l_, rec)
    assert all(len(files) == 1 for files in where.values()), where
    start = {tid: s for tid, s, _ in rows}
    valid = {t for t, f in where.items() if f == {"valid"}}
    train = set(where) - valid
    assert valid and train
    assert min(start[t] for t in valid) > max(start[t] for t in train)
    total = rec["trainCount"] + rec["validCount"]
    assert 0.05 * total <= rec["validCount"] <= 0.2 * total


def _hash_valid(l_: Lab, rec) -> set[tuple[str, str]]:
    """The (user, reply) of the examples the content hash holds out (as before issue 26)."""
    frame = pl.DataFrame(
        [
            {"system": e["messages"][0]["content"], "userPrompt": u, "response": r}
            for e, (u, r) in ((e, _turns(e)) for e in l_.examples(rec))
        ]
    )
    key = pl.struct("system", "userPrompt", "response").hash(ds._SEED)
    held = frame.filter(key % 100 < ds.VALID_PERCENT)
    return set(zip(held["userPrompt"], held["response"], strict=True))


def _turns(example: dict) -> tuple[str, str]:
    return example["messages"][-2]["content"], example["messages"][-1]["content"]


def test_hash_split_is_the_content_hash_split(lab):
    rows = [(f"t{i:03d}", 10_000 + i, [call(f"question {i}", f"answer {i}")]) for i in range(200)]
    l_ = lab(rows)
    rec = l_.build(split="hash")
    assert rec["split"] == "hash" and "heldOutFrom" not in rec
    assert rec["options"]["split"] == "hash"
    valid = {_turns(e) for e in l_.examples(rec, "valid")}
    assert valid == _hash_valid(l_, rec)
    assert rec["validCount"] == len(valid) and rec["trainCount"] == 200 - len(valid)
    # Files in the build's (newest first) order, as the hash split always wrote them.
    train = [_turns(e) for e in l_.examples(rec, "train")]
    assert train == sorted(train, key=lambda t: -int(t[0].split()[-1]))


def test_equal_start_times_fall_back_to_hash_and_say_so(lab):
    rows = [(f"t{i:03d}", 7_000, [call(f"question {i}", f"answer {i}")]) for i in range(120)]
    l_ = lab(rows)
    rec = l_.build()
    assert rec["split"] == "hash" and "heldOutFrom" not in rec
    assert any("content hash" in w for w in rec["warnings"])
    assert "split" not in rec["options"]  # the time split was asked for
    hashed = l_.build(split="hash")
    for name in ("train", "valid"):
        assert l_.examples(rec, name) == l_.examples(hashed, name)
    assert {_turns(e) for e in l_.examples(rec, "valid")} == _hash_valid(l_, rec)


def test_two_trajectories_give_one_each(lab):
    l_ = lab([("old", 100, [call("u1", "r1"), call("u2", "r2")]), ("new", 200, [call("u3", "r3")])])
    rec = l_.build()
    assert (rec["split"], rec["heldOutFrom"]) == ("time", 200)
    assert _by_trajectory(l_, rec) == {"old": {"train"}, "new": {"valid"}}


def test_labelled_build_splits_by_time(lab):
    fmt = "Reply in XML: <response><text>...</text></response>"
    rows = [
        (f"t{i:02d}", 1_000 + i, [call(f"q{i}", f"<response><text>a{i}</text></response>", fmt)])
        for i in range(30)
    ]
    l_ = lab(rows)
    rec = l_.build(kind="labelled")
    assert rec["split"] == "time"
    held = {e["metadata"]["trajectoryId"] for e in l_.examples(rec, "valid")}
    assert held == {"t27", "t28", "t29"}


@pytest.mark.parametrize("value", ["newest", 1, ""])
def test_a_bad_split_is_refused_naming_the_choices(lab, value):
    with pytest.raises(InputError) as refused:
        decode.body({"split": value}, schema.BuildDatasetRequest)
    assert refused.value.status == 400
    assert refused.value.message.startswith("split must be one of"), refused.value.message
    with pytest.raises(InputError, match="split must be one of"):
        ds.BuildOptions.from_body({"split": value})


def test_records_without_a_split_read_as_hash(tmp_path):
    store = StateStore(tmp_path / "state.db")
    with store.transaction() as tx:  # a row as a build before issue 26 wrote it
        tx.execute(
            "INSERT INTO datasets (id, created_at, trajectory_count, example_count, "
            "train_count, valid_count, path) VALUES ('ds-old', 1, 2, 2, 1, 1, '/x')"
        )
    rec = dataset_record(store.get_dataset("ds-old"))
    assert rec.split == "hash" and rec.held_out_from is None
