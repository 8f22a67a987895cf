"""Hostile ids and values on every route that takes one, against a real server: path
traversal (plain, percent-encoded, double-encoded, backslashes), quotes, NUL, newlines,
10 000-character ids, SQL-shaped ids → 400 or 404 with a JSON message, never a 500,
never a file touched outside ``MILADY_LAB_HOME``; and SQL-shaped ids built from real
ids never match anything (parameters only), over REST, the Python API and the CLI.

The in-process variant (pytest-jupyter) is ``tests/rest_api/test_rest_routes.py::
test_unknown_and_hostile_ids_are_404``; schemathesis fuzzing is ``tests/rest_api/
test_rest_live.py::test_schemathesis_against_live_server``.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from rest_api.restkit import insert_job, insert_model

from milady_lab.config import Settings
from milady_lab.service import TrainingService
from milady_lab.state import StateStore

from .relkit import cli_many, tree_snapshot

ID_ROUTES = [
    ("GET", "trajectories/{}"),
    ("GET", "jobs/{}"),
    ("POST", "jobs/{}/cancel"),
    ("GET", "jobs/{}/metrics"),
    ("POST", "models/{}/import-ollama"),
    ("POST", "models/{}/activate"),
    ("POST", "models/{}/benchmark"),
    ("GET", "models/{}/benchmark"),
]
#: As written into the URL path (already percent-encoded where needed).
HOSTILE_PATH_IDS = [
    "..%2F..%2Fsentinel%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fsentinel",
    "%252e%252e%252fsentinel",
    "..%5C..%5Csentinel",
    "%2F..%2F..%2Fetc%2Fpasswd",
    "....%2F%2F....%2F%2Fsentinel",
    "a%22b%27c%60",
    "%00",
    "x%00..%2Fy",
    "line%0Abreak%0D%0A",
    "x" * 10_000,
    "%27%20OR%201%3D1%20--",
    "x%27%20OR%20%271%27%3D%271",
    "%22%20OR%20%22%22%3D%22",
    "%27%3B%20DROP%20TABLE%20jobs%3B--",
    "%25",
    "_",
    "*",
    "%E2%80%AE%D8%A7",
    "%FF%FE",
    "%C0%AE%C0%AE%2F",
]
#: SQL-shaped suffixes appended to a real id: a string-built query would match the row.
SQL_SUFFIXES = ["' OR '1'='1", "' OR 1=1 --", "'--", '" OR ""="', "%", "_", "' UNION SELECT 1 --"]


def _outside(lab: dict) -> dict:
    """Everything of the user's except MILADY_LAB_HOME."""
    snap = tree_snapshot(lab["outside"])
    return {k: v for k, v in snap.items() if k != "home" and not k.startswith("home/")}


@pytest.fixture(scope="module")
def http(hostile_lab):
    server = hostile_lab["server"]
    with httpx.Client(
        base_url=f"{server.url}api/training/",
        trust_env=False,
        timeout=60,
        headers={"Authorization": f"token {server.token}"},
    ) as client:
        yield client


@pytest.fixture(scope="module")
def real(hostile_lab) -> dict[str, str]:
    """A real job and model in the server's store (read by SQL-shaped variants)."""
    store = StateStore(Settings.from_env(home=hostile_lab["home"]).state_db)
    insert_job(store, "job-real-1", "completed")
    model = insert_model(store, hostile_lab["home"], "model-real-1")
    store.close()
    return {"trajectory": "good-newest", "job": "job-real-1", "model": model["id"]}


def test_hostile_ids_on_every_route_are_4xx_and_touch_nothing_outside(hostile_lab, http) -> None:
    before = _outside(hostile_lab)
    problems = []
    for method, route in ID_ROUTES:
        for raw in HOSTILE_PATH_IDS:
            r = http.request(method, route.format(raw), json={} if method == "POST" else None)
            body = (
                r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            )
            if r.status_code not in (400, 404) or not body.get("message"):
                problems.append(
                    f"{method} {route.format(raw[:40])}: {r.status_code} {r.text[:120]}"
                )
    assert problems == []
    assert _outside(hostile_lab) == before
    assert "Traceback" not in hostile_lab["server"].log.read_text(errors="replace")


HOSTILE_BODIES = [
    ("POST", "jobs", {"datasetId": "../../sentinel", "iterations": 1}),
    ("POST", "jobs", {"datasetId": "' OR 1=1 --", "iterations": 1}),
    ("POST", "jobs", {"resumeFrom": "../../../etc", "iterations": 1}),
    ("POST", "jobs", {"model": "../user/sentinel", "iterations": 1}),
    ("POST", "jobs", {"model": "/etc/passwd", "iterations": 1}),
    ("POST", "jobs", {"model": "x\u0000y", "iterations": 1}),
    ("POST", "models/model-real-1/activate", {"providerModel": "\u0000"}),
    ("POST", "models/model-real-1/benchmark", {"datasetId": "../../sentinel"}),
    (
        "POST",
        "models/model-real-1/import-ollama",
        {"ollamaUrl": "http://localhost/../x", "modelName": "../../x"},
    ),
    ("GET", "jobs/job-real-1/metrics?after=1%20OR%201%3D1", None),
    ("GET", "trajectories?limit=1%27%20OR%20%271%27%3D%271", None),
    ("GET", "events?after=..%2F..&timeout=0", None),
]


@pytest.mark.parametrize(("method", "path", "body"), HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_hostile_values_in_bodies_and_queries_are_4xx(
    hostile_lab, http, real, method, path, body
) -> None:
    before = _outside(hostile_lab)
    r = http.request(method, path, json=body)
    assert r.status_code in (400, 404, 409, 502), r.text
    assert r.json()["message"]
    assert _outside(hostile_lab) == before


def test_sql_shaped_ids_never_change_a_query(hostile_lab, http, real) -> None:
    for kind, route in (
        ("trajectory", "trajectories/{}"),
        ("job", "jobs/{}"),
        ("job", "jobs/{}/metrics"),
    ):
        assert http.get(route.format(real[kind])).status_code == 200
        for suffix in SQL_SUFFIXES:
            for candidate in (real[kind] + suffix, "x" + suffix, suffix):
                r = http.get(route.format(quote(candidate, safe="")))
                assert r.status_code == 404, (candidate, r.status_code, r.text[:200])
    for suffix in SQL_SUFFIXES:
        r = http.post(
            f"models/{quote(real['model'] + suffix, safe='')}/activate", json={"providerModel": "x"}
        )
        assert r.status_code == 404, r.text
    # The Python API, with the same strings (and the store still holds every table).
    svc = TrainingService(
        Settings.from_env(home=hostile_lab["home"], trajectories=hostile_lab["trajectories"]),
        reconcile=False,
    )
    for suffix in SQL_SUFFIXES:
        assert svc.source.detail(real["trajectory"] + suffix) is None
        assert svc.source.detail(suffix) is None
        assert svc.store.get_job(real["job"] + suffix) is None
        assert svc.store.get_model(real["model"] + suffix) is None
        assert svc.store.get_dataset("x" + suffix) is None
    assert svc.store.get_job(real["job"]) is not None
    svc.close()


def test_cli_refuses_hostile_ids_with_one_line(hostile_lab, real) -> None:
    before = _outside(hostile_lab)
    base = [
        "--home",
        str(hostile_lab["home"]),
        "--trajectories",
        str(hostile_lab["trajectories"]),
        "--agent-config",
        str(hostile_lab["agent_config"]),
    ]
    ids = [
        "../../sentinel/passwd",
        "' OR '1'='1",
        real["job"] + "' OR 1=1 --",
        "x\nInjected: 1",
        "a" * 10_000,
        "..\\..\\sentinel",
    ]
    commands = [
        ([*base, *cmd, hostile], {})
        for hostile in ids
        for cmd in (
            ["trajectories", "show"],
            ["jobs", "show"],
            ["jobs", "cancel"],
            ["models", "show"],
            ["models", "activate"],
        )
    ]
    for (argv, _), (code, _, err) in zip(commands, cli_many(commands), strict=True):
        assert code == 2, (argv[-2:], code, err)
        assert err.startswith("milady-lab: ") and "Traceback" not in err
        assert err.count("\n") == 1, err  # one line, even for an id with a newline
    assert _outside(hostile_lab) == before
