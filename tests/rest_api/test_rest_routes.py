"""Every route of the training API through pytest-jupyter's in-process server.

Success shapes, every error class (400/403/404/405/409/413/500), hostile ids and
bodies, auth (no token, wrong token, cookie without XSRF), the event stream, and
activity reporting. Jobs are queued behind a fake running job (``occupied``) so no
test here trains; ``test_rest_live.py`` trains for real.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

import jupyter_server_ext.handlers as handlers_mod
from jupyter_server_ext.handlers import TrainingHandler, UnknownRouteHandler, route_table

from .restkit import insert_job, insert_model

VERBS = ("get", "post", "put", "delete", "patch", "head")
HOSTILE_IDS = [
    "nope",
    "..%2F..%2Fetc%2Fpasswd",
    "%2E%2E",
    "..",
    "a%22b%27c",
    "%00",
    "x%00y",
    "x" * 5000,
    "%27%3B%20DROP%20TABLE%20jobs%3B--",
    "%20",
    "%E2%80%AE",
]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- the decorators --
def test_every_handler_verb_is_authenticated_then_authorized() -> None:
    """Fails if any verb of any handler in the extension lacks either decorator."""
    classes = {h for _, h in route_table()}
    classes |= {
        obj
        for _, obj in inspect.getmembers(handlers_mod, inspect.isclass)
        if issubclass(obj, TrainingHandler) and obj is not TrainingHandler
    }
    checked = 0
    for cls in classes:
        for verb in VERBS:
            owner = next((k for k in cls.__mro__ if verb in k.__dict__), None)
            if owner is None or not owner.__module__.startswith("jupyter_server_ext"):
                continue  # tornado's default (405) or Jupyter's own
            fn = owner.__dict__[verb]
            outer = fn.__code__.co_qualname
            inner_fn = getattr(fn, "__wrapped__", None)
            inner = inner_fn.__code__.co_qualname if inner_fn is not None else ""
            assert outer.startswith("authenticated."), f"{cls.__name__}.{verb}: not @authenticated"
            assert inner.startswith("authorized."), f"{cls.__name__}.{verb}: not @authorized next"
            assert getattr(cls, "auth_resource", "").startswith("milady_lab"), cls
            checked += 1
    assert checked >= len(route_table())


# -- status, trajectories --
async def test_status_shape(api) -> None:
    code, body = await api("GET", "status")
    assert code == 200, body
    assert body["available"] is True
    assert body["backend"] in ("mlx", "cuda", "cpu")
    assert body["runtimeAvailable"] is True
    assert body["activeJobId"] is None
    assert "cpu" in body["backends"]


async def test_trajectories_page_and_detail(api, demo_count: int) -> None:
    code, page = await api("GET", "trajectories")
    assert code == 200, page
    assert (page["total"], page["offset"], page["limit"]) == (demo_count, 0, 100)
    assert len(page["trajectories"]) == 100
    first = page["trajectories"][0]
    for key in ("id", "source", "status", "llmCallCount", "startTime", "endTime"):
        assert key in first
    assert _is_int(first["startTime"]) and first["startTime"] > 1_000_000_000_000
    starts = [t["startTime"] for t in page["trajectories"] if t["startTime"] is not None]
    assert starts == sorted(starts, reverse=True)

    code, page2 = await api("GET", "trajectories", params={"limit": 7, "offset": 3})
    assert code == 200 and page2["limit"] == 7 and page2["offset"] == 3
    assert [t["id"] for t in page2["trajectories"]] == [t["id"] for t in page["trajectories"][3:10]]
    code, tail = await api("GET", "trajectories", params={"offset": demo_count + 5})
    assert code == 200 and tail["trajectories"] == [] and tail["total"] == demo_count

    with_calls = next(t for t in page["trajectories"] if (t["llmCallCount"] or 0) > 0)
    code, detail = await api("GET", f"trajectories/{with_calls['id']}")
    assert code == 200, detail
    traj = detail["trajectory"]
    assert traj["id"] == with_calls["id"]
    assert isinstance(traj["llmCalls"], list) and isinstance(traj["providerAccesses"], list)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": "abc"},
        {"limit": "1.5"},
        {"limit": ""},
        {"offset": -1},
        {"offset": "1e3"},
        {"limit": "9" * 30},
    ],
)
async def test_bad_paging_is_400(api, params) -> None:
    code, body = await api("GET", "trajectories", params=params)
    assert code == 400, body
    assert next(iter(params)) in body["message"]


ID_ROUTES = [
    ("GET", "trajectories/{}"),
    ("GET", "jobs/{}"),
    ("POST", "jobs/{}/cancel"),
    ("GET", "jobs/{}/metrics"),
    ("POST", "models/{}/import-ollama"),
    ("POST", "models/{}/activate"),
    ("POST", "models/{}/benchmark"),
    ("GET", "models/{}/benchmark"),
    ("GET", "models/{}/benchmarks"),
]


@pytest.mark.parametrize(("method", "route"), ID_ROUTES)
async def test_unknown_and_hostile_ids_are_404(api, lab, method, route, tmp_path) -> None:
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for raw_id in HOSTILE_IDS:
        code, body = await api(method, route.format(raw_id))
        assert code == 404, (raw_id, code, body)
        assert isinstance(body["message"], str) and body["message"]
        assert "\0" not in body["message"]
    # Invalid UTF-8 in the path is a 400, never a crash.
    code, body = await api(method, route.format("%FF%FE"))
    assert code in (400, 404), body
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    created = {str(p) for p in set(after) - set(before)}
    assert all(p.startswith("milady-home") for p in created), created


# -- bodies --
BAD_BODIES = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'"text"', "JSON object"),
    (b"42", "JSON object"),
    (b"null", "JSON object"),
    (b'{"limit": NaN}', "not valid JSON"),
    (b'{"limit": Infinity}', "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, None),  # deep nesting: 400, no crash
    ({"limit": "5"}, "limit must be an integer"),
    ({"limit": 0}, "limit must be at least 1"),
    ({"limit": 1.5}, "limit must be an integer"),
    ({"limit": True}, "limit must be an integer"),
    ({"minLlmCallsPerTrajectory": -3}, "minLlmCallsPerTrajectory must be at least 1"),
    ({"limit": 10, "extra": 1}, "unknown field(s) extra"),
    ({"limit": {"$gt": 1}}, "limit must be an integer"),
]


@pytest.mark.parametrize(("raw", "expected"), BAD_BODIES, ids=range(len(BAD_BODIES)))
async def test_bad_dataset_bodies_are_400(api, raw, expected) -> None:
    code, body = await api("POST", "datasets/build", body=raw)
    assert code == 400, body
    if expected:
        assert expected in body["message"], body


JOB_BAD = [
    ({"iterations": 0}, "iterations must be at least 1"),
    ({"iterations": 10**7}, "iterations must be at most"),
    ({"iterations": "10"}, "iterations must be an integer"),
    ({"batchSize": 0}, "batchSize must be at least 1"),
    ({"learningRate": 0}, "learningRate must be greater than 0"),
    ({"learningRate": "fast"}, "learningRate must be a number"),
    ({"backend": "tpu"}, "backend must be one of"),
    ({"backend": "cuda"}, "cuda"),
    ({"model": "   "}, "model"),
    ({"model": "no-such-model-name"}, "unknown model"),
    ({"model": "/no/such/folder"}, "no such folder"),
    ({"model": "0" * 1000}, "model"),  # longer than a file name: a 400, not an OSError
    ({"datasetId": 7}, "datasetId must be a string"),
    ({"gpu": True}, "unknown field(s) gpu"),
]


@pytest.mark.parametrize(("payload", "expected"), JOB_BAD, ids=range(len(JOB_BAD)))
async def test_bad_job_bodies_are_400(api, payload, expected) -> None:
    code, body = await api("POST", "jobs", body=payload)
    if payload == {"backend": "cuda"} and code == 201:
        pytest.skip("this machine has CUDA")
    assert code == 400, body
    assert expected in body["message"], body


async def test_body_over_10mb_is_413(api, ext) -> None:
    big = b'{"limit": 1, "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    for route in ("datasets/build", "jobs", "models/any/activate"):
        code, body = await api("POST", route, body=big)
        assert code == 413, (route, body)
        assert "10 MB" in body["message"]
    # Just under the limit is read whole (JSON with its whitespace; whitespace alone is not
    # a body but bad JSON).
    code, body = await api("POST", "datasets/build", body=b"{}" + b" " * (10 * 1024 * 1024 - 10))
    assert code == 201, body


async def test_unknown_method_is_405_with_allow(api) -> None:
    code, body = await api("DELETE", "jobs")
    assert code == 405 and "message" in body
    response = await api.raw("PUT", "datasets/build", body=b"{}")
    assert response.code == 405
    assert response.headers["Allow"] == "POST"


async def test_unexpected_exception_is_generic_500(api, ext, monkeypatch, caplog) -> None:
    def broken() -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(ext.service, "list_datasets", broken)
    code, body = await api("GET", "datasets")
    assert code == 500
    assert "bug" in body["message"] and "secret" not in body["message"]


# -- datasets --
async def test_build_and_list_datasets(api, lab) -> None:
    code, body = await api("GET", "datasets")
    assert (code, body) == (200, {"datasets": []})
    code, body = await api("POST", "datasets/build", body={"limit": 40})
    assert code == 201, body
    ds = body["dataset"]
    assert ds["trajectoryCount"] <= 40 and ds["exampleCount"] > 0
    assert _is_int(ds["createdAt"]) and ds["createdAt"] > 1_000_000_000_000
    assert Path(ds["path"]).parent == lab["home"] / "datasets"
    code, body = await api("GET", "datasets")
    assert code == 200 and [d["id"] for d in body["datasets"]] == [ds["id"]]
    code, body = await api("POST", "datasets/build", body={"minLlmCallsPerTrajectory": 10**9})
    assert code == 400 and "no trajectory qualifies" in body["message"]


FILTERED = {"source": ["chat", "discord"], "status": "completed", "search": "the"}


async def test_preview_counts_what_a_filtered_build_gives(api, lab) -> None:
    code, everything = await api("POST", "datasets/preview", body={})
    assert code == 200 and everything["trajectoryCount"] > 0, everything
    code, counts = await api("POST", "datasets/preview", body=FILTERED)
    assert code == 200, counts
    assert set(counts) == {"trajectoryCount", "exampleCount", "redactions"}
    assert 0 < counts["trajectoryCount"] < everything["trajectoryCount"]
    assert not (lab["home"] / "datasets").exists() or not any(
        (lab["home"] / "datasets").iterdir()
    )  # a preview writes nothing
    code, body = await api("POST", "datasets/build", body=FILTERED)
    assert code == 201, body
    ds = body["dataset"]
    assert (ds["trajectoryCount"], ds["exampleCount"]) == (
        counts["trajectoryCount"],
        counts["exampleCount"],
    )
    assert ds["options"]["source"] == ["chat", "discord"]
    code, none = await api("POST", "datasets/preview", body={"source": "no-such-source"})
    assert (code, none) == (200, {"trajectoryCount": 0, "exampleCount": 0, "redactions": {}})


FILTER_BAD = [
    ({"source": ""}, "source must not be empty"),
    ({"source": 7}, "source must be a string or a list"),
    ({"status": []}, "status must list at least 1"),
    ({"status": ["completed", 3]}, "status must be a string"),
    ({"startDate": "11/02/2026"}, "startDate must be a date as YYYY-MM-DD"),
    ({"endDate": "2026-02-30"}, "endDate must be a date as YYYY-MM-DD"),
    ({"startDate": "2026-03-02", "endDate": "2026-03-01"}, "is after endDate"),
    ({"search": "x" * 1001}, "search must be at most 1000 characters"),
    ({"timeZone": "../etc/passwd"}, "timeZone must be an IANA time zone name"),
    ({"search": "\u0000"}, "search must not contain control characters"),
    ({"sources": ["chat"]}, "unknown field(s) sources"),
]


@pytest.mark.parametrize("route", ["datasets/build", "datasets/preview"])
@pytest.mark.parametrize(("payload", "expected"), FILTER_BAD, ids=range(len(FILTER_BAD)))
async def test_bad_filters_are_400(api, lab, route, payload, expected) -> None:
    code, body = await api("POST", route, body=payload)
    assert code == 400, body
    assert expected in body["message"], body
    assert not (lab["home"] / "datasets").exists() or not any(
        p for p in (lab["home"] / "datasets").iterdir() if not p.name.startswith(".")
    )


# -- jobs --
async def test_job_routes_queue_cancel_and_conflict(api, store, occupied) -> None:
    code, body = await api("POST", "datasets/build", body={})
    assert code == 201, body
    dataset_id = body["dataset"]["id"]

    code, body = await api("POST", "jobs", body={"iterations": 3, "batchSize": 2})
    assert code == 201, body
    job = body["job"]
    assert job["status"] == "queued" and job["datasetId"] == dataset_id
    for key in ("id", "backend", "model", "createdAt", "progress", "totalIterations"):
        assert key in job
    assert _is_int(job["createdAt"]) and job["progress"] == 0

    code, body = await api("GET", "jobs")
    assert code == 200 and {j["id"] for j in body["jobs"]} >= {job["id"], occupied["id"]}
    code, body = await api("GET", f"jobs/{job['id']}")
    assert code == 200 and body["job"]["id"] == job["id"]
    code, body = await api("GET", f"jobs/{job['id']}/metrics")
    assert (code, body) == (200, {"jobId": job["id"], "metrics": []})
    code, body = await api("GET", f"jobs/{job['id']}/metrics", params={"after": "x"})
    assert code == 400

    code, body = await api("GET", "status")
    assert body["activeJobId"] == occupied["id"]

    code, body = await api("POST", f"jobs/{job['id']}/cancel")
    assert code == 200 and body["job"]["status"] == "cancelled", body
    code, body = await api("POST", f"jobs/{job['id']}/cancel")
    assert code == 409 and "already cancelled" in body["message"]  # as documented

    done = insert_job(store, "job-finished-1", "completed")
    code, body = await api("POST", f"jobs/{done['id']}/cancel")
    assert code == 409 and "completed" in body["message"]

    code, body = await api("POST", "jobs", body={"datasetId": "ds-nope"})
    assert code == 404 and "ds-nope" in body["message"]
    code, body = await api("POST", "jobs", body={"resumeFrom": done["id"]})
    assert code == 409, body


# -- models --
async def test_model_routes(api, store, lab) -> None:
    code, body = await api("GET", "models")
    assert (code, body) == (200, {"models": []})
    model = insert_model(store, lab["home"])
    code, body = await api("GET", "models")
    assert code == 200 and body["models"][0]["id"] == model["id"]
    assert body["models"][0]["active"] is False

    # Nothing to activate: not imported and no providerModel.
    code, body = await api("POST", f"models/{model['id']}/activate", body={})
    assert code == 409 and "import" in body["message"]
    code, body = await api("POST", f"models/{model['id']}/activate", body={"providerModel": 5})
    assert code == 400
    # The agent config does not exist: refused unless asked to create it.
    code, body = await api(
        "POST", f"models/{model['id']}/activate", body={"providerModel": "local/test"}
    )
    assert code == 400 and str(lab["agent_config"]) in body["message"], body
    assert "create=true" in body["message"] and not lab["agent_config"].parent.exists()
    # Never benchmarked: the gate refuses at once, saying how to benchmark it.
    code, body = await api(
        "POST",
        f"models/{model['id']}/activate",
        body={"providerModel": "local/test", "create": True},
    )
    assert code == 409 and "has not been benchmarked" in body["message"], body
    assert f"POST /api/training/models/{model['id']}/benchmark" in body["message"]
    assert not lab["agent_config"].exists()
    code, body = await api(
        "POST",
        f"models/{model['id']}/activate",
        body={"providerModel": "local/test", "force": True, "create": True},
    )
    assert (code, body) == (200, {"ok": True, "activeModel": "local/test"})
    config = json.loads(lab["agent_config"].read_text())
    assert config["agents"]["defaults"]["model"]["primary"] == "local/test"

    # History, then rollback: the config goes away again (it did not exist before).
    code, body = await api("GET", "activations")
    assert code == 200 and body["activations"][0]["modelId"] == model["id"]
    assert body["activations"][0]["forced"] is True
    code, body = await api("GET", f"models/{model['id']}/benchmarks")
    assert (code, body) == (200, {"modelId": model["id"], "benchmarks": []})
    code, body = await api("GET", "models/no-such/benchmarks")
    assert code == 404
    code, body = await api("POST", "models/deactivate", body={})
    assert code == 200 and body["deactivatedModel"] == model["id"] and body["restored"] == "exact"
    assert not lab["agent_config"].exists()
    code, body = await api("POST", "models/deactivate", body={})
    assert code == 409 and "no activation" in body["message"]
    code, body = await api("POST", "models/deactivate", body={"x": 1})
    assert code == 400
    code, body = await api(
        "POST",
        f"models/{model['id']}/activate",
        body={"providerModel": "local/test", "force": True, "create": True},
    )
    assert code == 200 and "warnings" not in body
    # Named by its name or as the newest model; an ollama/… model Ollama cannot confirm
    # (nothing listens there) is activated with a warning, recorded in the history.
    code, body = await api("GET", "models/latest/benchmarks")
    assert (code, body["modelId"]) == (200, model["id"])
    code, body = await api(
        "POST",
        f"models/{model['name']}/activate",
        body={"providerModel": "ollama/nope", "force": True, "ollamaUrl": "http://127.0.0.1:9"},
    )
    assert code == 200 and body["warnings"][0].startswith("could not check"), body
    code, body = await api("GET", "activations")
    warnings = body["activations"][0]["warnings"]
    assert len(warnings) == 1 and "Ollama has nope" in warnings[0]

    for url in ("http://example.com:11434", "http://127.1:11434", "http://0.0.0.0:1"):
        code, body = await api(
            "POST", f"models/{model['id']}/import-ollama", body={"ollamaUrl": url}
        )
        assert code == 400 and "loopback" in body["message"], (url, body)
    # A loopback port where nothing listens: Ollama unreachable → 502.
    code, body = await api(
        "POST",
        f"models/{model['id']}/import-ollama",
        body={"ollamaUrl": "http://127.0.0.1:9", "baseModel": "smollm2:135m"},
    )
    assert code == 502 and "Ollama" in body["message"], body

    code, body = await api("POST", f"models/{model['id']}/benchmark", body={"bogus": 1})
    assert code == 400 and "bogus" in body["message"]


# -- auth --
ALL_ROUTES = [
    ("GET", "status"),
    ("GET", "trajectories"),
    ("GET", "trajectories/x"),
    ("GET", "datasets"),
    ("POST", "datasets/build"),
    ("POST", "datasets/preview"),
    ("GET", "jobs"),
    ("POST", "jobs"),
    ("GET", "jobs/x"),
    ("POST", "jobs/x/cancel"),
    ("GET", "jobs/x/metrics"),
    ("GET", "models"),
    ("POST", "models/x/import-ollama"),
    ("POST", "models/x/activate"),
    ("POST", "models/x/benchmark"),
    ("GET", "models/x/benchmark"),
    ("GET", "models/x/benchmarks"),
    ("POST", "models/deactivate"),
    ("GET", "activations"),
    ("GET", "auto"),
    ("PUT", "auto"),
    ("GET", "auto/config"),
    ("POST", "auto/config"),
    ("GET", "auto/status"),
    ("GET", "auto/runs"),
    ("POST", "auto/trigger"),
    ("GET", "backends"),
    ("POST", "trajectories/export"),
    ("GET", "no/such/route"),
    ("GET", "events"),
    ("GET", "openapi.json"),
]


async def test_every_route_refuses_missing_or_wrong_token(api, lab) -> None:
    # jobs, models/x/benchmark: GET and POST; auto and auto/config: GET and PUT/POST
    assert len(ALL_ROUTES) == len(route_table()) + 4
    for method, path in ALL_ROUTES:
        for token in (None, "wrong-token"):
            code, body = await api(method, path, body={}, token=token)
            assert code == 403, (method, path, token, code)
            assert isinstance(body, dict) and body["message"], (method, path)
    assert not (lab["home"] / "datasets").exists() or not any((lab["home"] / "datasets").iterdir())


async def test_bearer_and_query_token_are_accepted(api, jp_serverapp) -> None:
    token = jp_serverapp.identity_provider.token
    code, _ = await api("GET", "status", token=None, headers={"Authorization": f"Bearer {token}"})
    assert code == 200
    code, _ = await api("GET", "status", token=None, params={"token": token})
    assert code == 200


async def test_cookie_post_needs_xsrf(api, jp_serverapp) -> None:
    """A browser-style request (login cookie, no token) must carry the XSRF token on POST."""
    first = await api.raw("GET", "status")
    cookies = SimpleCookie()
    for header in first.headers.get_list("Set-Cookie"):
        cookies.load(header)
    login = {k: m.value for k, m in cookies.items() if k.startswith("username-")}
    assert login, first.headers.get_list("Set-Cookie")
    cookie_header = "; ".join(f"{k}={v}" for k, v in login.items())

    code, _ = await api("GET", "datasets", token=False, headers={"Cookie": cookie_header})
    assert code == 200  # the cookie alone authenticates reads
    code, body = await api("POST", "datasets/build", body={}, token=False,
                           headers={"Cookie": cookie_header})  # fmt: skip
    assert code == 403, body
    code, body = await api("POST", "jobs/x/cancel", token=False, headers={"Cookie": cookie_header})
    assert code == 403, body

    # With the XSRF cookie echoed in the header, the same POST goes through.
    xsrf = "2|deadbeef|" + "0" * 32 + "|1700000000"
    headers = {"Cookie": f"{cookie_header}; _xsrf={xsrf}", "X-XSRFToken": xsrf}
    code, body = await api("POST", "jobs/x/cancel", token=False, headers=headers)
    assert code == 404, body


# -- events --
def _parse_sse(text: str) -> list[dict[str, str]]:
    messages, current = [], {}
    for line in text.split("\n"):
        if not line:
            if "data" in current:
                messages.append(current)
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = value
    return messages


async def test_events_stream_replays_and_resumes(api, store) -> None:
    store.emit("job_log", "one", jobId="job-a")
    store.emit("dataset_built", "two", datasetId="ds-b")
    store.emit("job_progress", "three", jobId="job-a", iteration=1)
    response = await api.raw("GET", "events", params={"after": 0, "timeout": 0.5})
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    messages = _parse_sse(response.body.decode())
    assert [m["event"] for m in messages] == ["job_log", "dataset_built", "job_progress"]
    datas = [json.loads(m["data"]) for m in messages]
    assert [d["message"] for d in datas] == ["one", "two", "three"]
    assert all(_is_int(d["ts"]) and _is_int(d["seq"]) for d in datas)
    assert datas[0]["jobId"] == "job-a" and datas[1]["datasetId"] == "ds-b"
    assert [int(m["id"]) for m in messages] == [d["seq"] for d in datas]

    # Last-Event-ID wins over ?after and resumes after that event.
    headers = {"Last-Event-ID": messages[0]["id"]}
    response = await api.raw("GET", "events", params={"after": 0, "timeout": 0.3}, headers=headers)
    assert [m["event"] for m in _parse_sse(response.body.decode())] == [
        "dataset_built",
        "job_progress",
    ]
    # No cursor: from now on, so nothing old.
    response = await api.raw("GET", "events", params={"timeout": 0.3})
    assert _parse_sse(response.body.decode()) == []
    code, _ = await api("GET", "events", params={"after": -1})
    assert code == 400
    code, _ = await api("GET", "events", params={"timeout": "soon"})
    assert code == 400


async def test_events_arrive_live_within_a_second(api, store, jp_base_url, http_server_client,
                                                  jp_serverapp) -> None:  # fmt: skip
    received: list[tuple[float, str]] = []
    buffer = bytearray()

    def on_chunk(chunk: bytes) -> None:
        buffer.extend(chunk)
        for m in _parse_sse(buffer.decode()):
            if m["event"] == "job_progress" and not received:
                received.append((time.monotonic(), m["data"]))

    url = f"{jp_base_url}api/training/events?timeout=3"
    token = jp_serverapp.identity_provider.token
    fetch = asyncio.ensure_future(
        http_server_client.fetch(
            url,
            headers={"Authorization": f"token {token}"},
            streaming_callback=on_chunk,
            request_timeout=10,
            raise_error=False,
        )
    )
    await asyncio.sleep(0.5)
    written = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: store.emit("job_progress", "iteration 1", jobId="job-live", iteration=1)
    )
    await fetch
    assert received, buffer.decode()
    assert received[0][0] - written < 1.0
    assert json.loads(received[0][1])["jobId"] == "job-live"


async def test_event_stream_ends_when_server_stops(api, ext) -> None:
    fetch = asyncio.ensure_future(api.raw("GET", "events", params={"timeout": 30}))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await ext.stop_extension()
    response = await asyncio.wait_for(fetch, 5)
    assert response.code == 200 and time.monotonic() - started < 5


# -- activity --
async def test_live_jobs_count_as_activity(ext, jp_serverapp, occupied, store) -> None:
    settings = jp_serverapp.web_app.settings
    deadline = time.monotonic() + 5
    while not ext.current_activity() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert ext.current_activity() == [{"jobId": occupied["id"], "status": "running"}]
    assert jp_serverapp.extension_manager.any_activity()
    assert "milady_lab" in settings["last_activity_times"]

    # Jupyter's own idle-shutdown check does not stop the server while the job lives.
    stops: list[bool] = []
    jp_serverapp.shutdown_no_activity_timeout = 1
    settings["api_last_activity"] = settings["started"]
    settings["last_activity_times"]["milady_lab"] = settings["started"]
    jp_serverapp.kernel_manager.last_kernel_activity = settings["started"]
    await asyncio.sleep(1.1)
    jp_serverapp.stop = lambda *a, **k: stops.append(True)  # record instead of stopping
    jp_serverapp.shutdown_no_activity()
    assert stops == []

    store.update_job(occupied["id"], status="failed", error="test over")
    deadline = time.monotonic() + 5
    while ext.current_activity() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert ext.current_activity() is None
    settings["api_last_activity"] = settings["started"]
    settings["last_activity_times"]["milady_lab"] = settings["started"]
    jp_serverapp.kernel_manager.last_kernel_activity = settings["started"]
    await asyncio.sleep(1.1)
    jp_serverapp.shutdown_no_activity()
    assert stops == [True]  # idle now: Jupyter's check would stop the server


# -- the spec --
async def test_openapi_is_served_and_covers_every_route(api, jp_base_url) -> None:
    code, spec = await api("GET", "openapi.json")
    assert code == 200 and spec["openapi"].startswith("3.")
    assert spec["servers"] == [{"url": jp_base_url.rstrip("/") or "/"}]
    documented = set(spec["paths"])
    routes = [(p, h) for p, h in route_table() if h is not UnknownRouteHandler]
    assert route_table()[-1][1] is UnknownRouteHandler  # the catch-all comes last
    served = {pattern.replace("(?P<item_id>[^/]+)", "{id}") for pattern, _ in routes}
    assert documented == served
    for _pattern, handler in routes:
        path = _pattern.replace("(?P<item_id>[^/]+)", "{id}")
        for verb in VERBS:
            owner = next((k for k in handler.__mro__ if verb in k.__dict__), None)
            if owner is not None and owner.__module__.startswith("jupyter_server_ext"):
                assert verb in spec["paths"][path], (path, verb)
    import schemathesis

    schemathesis.openapi.from_dict(spec)  # loads: the document is valid OpenAPI


async def test_auto_routes(api, store, lab) -> None:
    code, body = await api("GET", "auto")
    assert code == 200 and body["policy"]["enabled"] is False
    assert body["policy"]["minNewTrajectories"] == 100 and body["policy"]["cooldownHours"] == 12
    code, body = await api(
        "PUT", "auto", body={"enabled": True, "minNewTrajectories": 5, "activate": "if-better"}
    )
    assert code == 200 and body["policy"]["enabled"] is True
    assert body["policy"]["minNewTrajectories"] == 5 and body["policy"]["cooldownHours"] == 12
    for bad in ({"activate": "always"}, {"cooldownHours": -1}, {"nope": 1},
                {"ollamaUrl": "http://example.com"}, {"minNewTrajectories": 0}):  # fmt: skip
        code, err = await api("PUT", "auto", body=bad)
        assert code == 400, (bad, err)
    code, body = await api("GET", "auto")
    assert body["policy"]["activate"] == "if-better"  # the refused changes changed nothing
