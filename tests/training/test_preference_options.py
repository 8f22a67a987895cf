"""The job options of preference training (issue 27): objective, beta, KTO weights,
checked against the dataset's kind before any process starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from milady_lab.errors import InputError
from milady_lab.state import StateStore
from milady_lab.training.options import JobOptions
from milady_lab.training.request import RecordedOptions
from milady_lab.training.spec import TrainSpec
from milady_lab.training.worker import train_spec


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    s = StateStore(tmp_path / "state.db")
    for ds_id, kind in (("ds-pairs", "pairs"), ("ds-labels", "labelled"), ("ds-sft", "sft")):
        s.insert_dataset({
            "id": ds_id, "createdAt": 1, "trajectoryCount": 4, "exampleCount": 8,
            "trainCount": 7, "validCount": 1, "path": str(tmp_path / ds_id), "kind": kind,
        })  # fmt: skip
    return s


def _spec(rec: RecordedOptions, tmp_path: Path) -> TrainSpec:
    return train_spec(rec, job_id="job-1", backend="cpu", model="m", iterations=3,
                      dataset_dir=tmp_path, output_dir=tmp_path, job_dir=tmp_path)  # fmt: skip


def test_objectives_and_their_parameters_reach_the_spec(store: StateStore, tmp_path: Path) -> None:
    dpo = JobOptions.from_body({"datasetId": "ds-pairs", "backend": "cpu", "objective": "dpo",
                                "beta": 0.2}, store)  # fmt: skip
    rec = dpo.to_record()
    assert (rec["objective"], rec["beta"]) == ("dpo", 0.2)
    spec = _spec(rec, tmp_path)
    assert (spec.objective, spec.beta, spec.desirable_weight) == ("dpo", 0.2, 1.0)
    body = {"datasetId": "ds-labels", "backend": "cpu", "objective": "kto"}
    kto = JobOptions.from_body({**body, "desirableWeight": 1.5, "undesirableWeight": "0.5"}, store)
    assert _spec(kto.to_record(), tmp_path).undesirable_weight == 0.5
    sft = JobOptions.from_body({"datasetId": "ds-sft", "backend": "cpu"}, store)
    assert "objective" not in sft.to_record()  # SFT records stay as they were
    assert "objective" not in sft.to_record().to_dict()
    assert (_spec(sft.to_record(), tmp_path).objective, _spec(sft.to_record(), tmp_path).beta) == (
        "sft",
        0.1,
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"datasetId": "ds-sft", "objective": "dpo"}, "of kind 'sft'; objective 'dpo'"),
        ({"datasetId": "ds-pairs", "objective": "kto"}, 'kind "labelled"'),
        ({"datasetId": "ds-pairs"}, "objective 'sft' trains on"),
        ({"datasetId": "ds-sft", "beta": 0.1}, "beta applies to objective dpo or kto"),
        ({"datasetId": "ds-pairs", "objective": "dpo", "desirableWeight": 2}, "applies to"),
        ({"datasetId": "ds-pairs", "objective": "dpo", "beta": 0}, "beta"),
        ({"datasetId": "ds-pairs", "objective": "ppo"}, "objective"),
        ({"maxTrajectories": 5, "objective": "dpo"}, "needs a dataset of kind"),
    ],
)
def test_bad_preference_options_are_400s(store: StateStore, body: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        JobOptions.from_body({"backend": "cpu", **body}, store)


def test_preference_objectives_run_on_mlx_and_on_several_ranks(store: StateStore) -> None:
    for ds_id, objective in (("ds-pairs", "dpo"), ("ds-labels", "kto")):
        body = {"datasetId": ds_id, "backend": "mlx", "objective": objective}
        rec = JobOptions.from_body(body, store).to_record()
        assert (rec["backend"], rec["objective"]) == ("mlx", objective)
        two = {**body, "backend": "cpu", "devices": 2, "batchSize": 3}
        rec = JobOptions.from_body(two, store).to_record()
        assert (rec["devices"], rec["strategy"], rec["objective"]) == (2, "ddp", objective)
        assert rec["globalBatchSize"] == 6
        with pytest.raises(InputError, match="with strategy ddp, not fsdp"):
            JobOptions.from_body({**two, "strategy": "fsdp"}, store)
        with pytest.raises(InputError, match="the mlx backend trains on one device"):
            JobOptions.from_body({**body, "devices": 2}, store)
    # fsdp on one device shards nothing: it trains as one process does.
    one = {"datasetId": "ds-pairs", "backend": "cpu", "objective": "dpo", "strategy": "fsdp"}
    assert JobOptions.from_body(one, store).to_record()["objective"] == "dpo"
