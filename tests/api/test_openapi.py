"""The shipped ``openapi.json`` is the one ``milady_lab.api`` generates, and every body
and answer it describes is a struct the code uses."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from milady_lab.api import openapi, routes, schema
from milady_lab.datasets.build import BuildOptions

SHIPPED = Path(__file__).resolve().parents[2] / "jupyter_server_ext" / "openapi.json"


def test_the_committed_openapi_is_the_generated_one() -> None:
    assert SHIPPED.read_text(encoding="utf-8") == openapi.render(), (
        "openapi.json differs from milady_lab/api: run `make openapi` and commit the result"
    )


def test_every_route_names_its_body_and_answer_structs() -> None:
    doc = json.loads(SHIPPED.read_text(encoding="utf-8"))
    schemas = doc["components"]["schemas"]
    served = {
        (method.upper(), path.removeprefix("/api/training/")): op["operationId"]
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }
    assert served == {(op.method, op.path): op.id for op in routes.OPERATIONS}
    for op in routes.OPERATIONS:
        for struct in (op.body, op.answer):
            if struct is not None:
                assert struct.__name__ in schemas, (op.id, struct)
        if op.body is not None:
            assert (
                issubclass(op.body, msgspec.Struct)
                and op.body.__struct_config__.forbid_unknown_fields
            ) or op.body is schema.AgentTrainingConfigRequest


def test_build_options_take_the_body_fields_in_the_struct_order() -> None:
    """Messages list a build's fields in this order; the struct is the one source."""
    fields = [f.encode_name for f in msgspec.structs.fields(schema.BuildDatasetRequest)]
    assert list(BuildOptions.FIELDS) == fields


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b'{"iterations": 0}', "$.iterations"),
        (b'{"learningRate": "fast"}', "$.learningRate"),
        (b'{"model": " "}', "$.model"),
        (b'{"nope": 1}', "nope"),
    ],
)
def test_a_bad_job_body_names_the_field(raw: bytes, where: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=__import__("re").escape(where)):
        msgspec.json.decode(raw, type=schema.StartJobRequest)


def test_records_read_like_the_json_they_encode_to() -> None:
    job = schema.Job(
        id="j1",
        status="running",
        dataset_id=None,
        backend="cpu",
        model="smollm2",
        created_at=1,
        completed_at=None,
        progress=0.5,
        current_iteration=2,
        total_iterations=4,
        loss=1.5,
        model_id=None,
        val_loss=None,
    )
    wire = msgspec.json.decode(msgspec.json.encode(job))
    assert wire == dict(job) == job.to_dict()
    assert "valLoss" not in wire and "datasetId" in wire and wire["datasetId"] is None
    assert job["currentIteration"] == job.current_iteration == 2
    assert job.get("valLoss", "absent") == "absent" and "valLoss" not in job
    with pytest.raises(KeyError):
        job["current_iteration"]  # attribute names are not wire names
    assert msgspec.json.decode(msgspec.json.encode(job), type=schema.Job) == job
