"""Trajectories through TrainingService: paging input rules, not-found ids, unreachable
sources reported in status."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from milady_lab.config import Settings
from milady_lab.errors import InputError, NotFoundError, UpstreamError
from milady_lab.service import TrainingService


def service(tmp_path: Path, trajectories: str | Path) -> TrainingService:
    settings = Settings.from_env(home=tmp_path / "home", trajectories=trajectories,
                                 cache=tmp_path / "cache")  # fmt: skip
    return TrainingService(settings, reconcile=False)


def test_listing_body_and_defaults(tmp_path: Path, demo_db: Path) -> None:
    svc = service(tmp_path, demo_db)
    body = svc.list_trajectories()
    assert (body["total"], body["offset"], body["limit"]) == (400, 0, 100)
    assert len(body["trajectories"]) == 100
    assert set(body["trajectories"][0]) >= {"id", "source", "status", "llmCallCount",
                                            "startTime", "endTime"}  # fmt: skip
    last = svc.list_trajectories("500", "390")
    assert len(last["trajectories"]) == 10 and last["limit"] == 500
    assert svc.list_trajectories(10, 400)["trajectories"] == []


@pytest.mark.parametrize(
    ("limit", "offset"),
    [(0, 0), (501, 0), ("abc", 0), (True, 0), (1.5, 0), ("", 0), ([], 0), (10, -1),
     (10, "x"), (10, 2.5), (10, False), ("1e3", 0)],
)  # fmt: skip
def test_bad_paging_is_an_input_error(tmp_path: Path, demo_db: Path, limit, offset) -> None:
    with pytest.raises(InputError):
        service(tmp_path, demo_db).list_trajectories(limit, offset)


def test_detail_and_unknown_ids(tmp_path: Path, demo_db: Path) -> None:
    svc = service(tmp_path, demo_db)
    tid = svc.list_trajectories(1, 0)["trajectories"][0]["id"]
    detail = svc.get_trajectory(tid)["trajectory"]
    assert detail["id"] == tid and "llmCalls" in detail and "providerAccesses" in detail
    for odd in ("no-such-id", "", "\x00", None, 42, "x" * 10_000):
        with pytest.raises(NotFoundError):
            svc.get_trajectory(odd)


def test_unreachable_source_is_a_502_and_status_says_why(tmp_path: Path) -> None:
    for spec in (tmp_path / "missing.sqlite", "postgresql://u:pw@127.0.0.1:1/x",
                 "milady+http://127.0.0.1:1"):  # fmt: skip
        svc = service(tmp_path, spec)
        # Issue 23: a source that cannot be read is an error naming it, never 0 trajectories.
        with pytest.raises(UpstreamError, match="cannot read the trajectories") as caught:
            svc.list_trajectories()
        assert "pw@" not in str(caught.value)
        with pytest.raises(UpstreamError):
            svc.get_trajectory("x")
        if importlib.util.find_spec("milady_lab.training.backends") is not None:
            status = svc.status()
            assert status["runtimeAvailable"] is False
            assert status["runtimeReason"]
            assert "pw" not in status["trajectorySource"]
        else:
            assert svc.source.unavailable_reason()
