"""``openapi.json``'s request bodies follow the option types they describe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from milady_lab.training import request

OPENAPI = Path(__file__).resolve().parents[2] / "jupyter_server_ext" / "openapi.json"
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength")


def _normal(prop: dict[str, Any]) -> dict[str, Any]:
    """A property's JSON types, enum and bounds, whichever way the schema spells them."""
    parts = prop.get("anyOf", [prop])
    types: set[str] = set()
    enum: set[Any] = set()
    bounds: dict[str, Any] = {}
    for part in parts:
        kind = part.get("type")
        types.update(kind if isinstance(kind, list) else [kind] if kind else [])
        if "enum" in part:
            enum.update(x for x in part["enum"] if x is not None)
            types.add("string")
        bounds.update({k: part[k] for k in _BOUNDS if k in part})
    return {"types": types, "enum": enum, "bounds": bounds}


def test_start_job_request_matches_the_options_struct() -> None:
    spec = json.loads(OPENAPI.read_text(encoding="utf-8"))["components"]["schemas"]
    documented = spec["StartJobRequest"]
    ours = msgspec.json.schema(request.JobRequest)["$defs"]["JobRequest"]
    assert documented.get("additionalProperties") is False  # unknown fields are a 400
    assert set(documented["properties"]) == set(ours["properties"]) == set(request.FIELDS)
    for name, prop in ours["properties"].items():
        assert _normal(documented["properties"][name]) == _normal(prop), name
    assert _normal(ours["properties"]["backend"])["enum"] == set(request.BACKENDS)


def test_build_dataset_request_matches_the_build_struct() -> None:
    """Build and preview share one body: ``dataset_request.BuildRequest``."""
    from milady_lab.datasets import build as datasets
    from milady_lab.datasets import request as dataset_request

    spec = json.loads(OPENAPI.read_text(encoding="utf-8"))["components"]["schemas"]
    documented = spec["BuildDatasetRequest"]
    defs = msgspec.json.schema(dataset_request.BuildRequest)["$defs"]
    ours = defs["BuildRequest"]
    assert documented.get("additionalProperties") is False
    assert (
        list(documented["properties"])
        == list(ours["properties"])
        == list(datasets.BuildOptions.FIELDS)
    )
    for name, prop in ours["properties"].items():
        if name == "privacy":  # a nested object: compare its own fields
            privacy = documented["properties"]["privacy"]
            assert privacy["additionalProperties"] is False
            assert set(privacy["properties"]) == set(defs["PrivacyRequest"]["properties"])
            continue
        assert _normal(documented["properties"][name]) == _normal(prop), name
    statuses = "paths", "/api/training/datasets/preview", "post", "requestBody", "content"
    preview = json.loads(OPENAPI.read_text(encoding="utf-8"))
    for key in statuses:
        preview = preview[key]
    assert preview["application/json"]["schema"]["$ref"].endswith("/BuildDatasetRequest")
