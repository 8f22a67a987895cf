"""Every route × {no token, wrong token (header and query), right token, login cookie
without the XSRF token on POST} against a real server started with
``allow_unauthenticated_access=False``: the documented refusals (403 with a JSON
message), and the right credentials get through.

The decorator check (a test that fails if any handler verb is not ``@web.authenticated``
then ``@authorized``) is ``tests/rest_api/test_rest_routes.py::
test_every_handler_verb_is_authenticated_then_authorized``.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import httpx

from jupyter_server_ext.handlers import route_table

#: (method, path, body for the right token that is valid enough to pass auth).
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "status", None),
    ("GET", "trajectories", None),
    ("GET", "trajectories/good-newest", None),
    ("GET", "datasets", None),
    ("POST", "datasets/build", {"limit": 1}),
    ("POST", "datasets/preview", {"limit": 1}),
    ("GET", "jobs", None),
    ("POST", "jobs", {"iterations": 0}),
    ("GET", "jobs/x", None),
    ("POST", "jobs/x/cancel", None),
    ("GET", "jobs/x/metrics", None),
    ("GET", "models", None),
    ("POST", "models/x/import-ollama", {}),
    ("POST", "models/x/activate", {}),
    ("POST", "models/x/benchmark", {}),
    ("GET", "models/x/benchmark", None),
    ("GET", "models/x/benchmarks", None),
    ("POST", "models/deactivate", {}),
    ("GET", "activations", None),
    ("GET", "auto", None),
    ("PUT", "auto", {}),
    ("GET", "auto/config", None),
    ("POST", "auto/config", {}),
    ("GET", "auto/status", None),
    ("GET", "auto/runs", None),
    ("POST", "auto/trigger", {"task": "dance"}),
    ("GET", "backends", None),
    ("POST", "trajectories/export", {"limit": 0}),
    ("GET", "events?timeout=0", None),
    ("GET", "openapi.json", None),
    ("GET", "no/such/route", None),
]
EXPECTED_RIGHT = {
    ("POST", "datasets/build"): 201,
    ("POST", "jobs"): 400,
    ("POST", "auto/trigger"): 400,
    ("POST", "trajectories/export"): 400,
    ("GET", "no/such/route"): 404,
}


def _refused(r: httpx.Response) -> bool:
    """403 with the reason under Jupyter's ``message`` and the agent's ``error``."""
    body = r.json() if r.status_code == 403 else {}
    return bool(body.get("message")) and body.get("error") == body["message"]


def test_every_route_with_every_credential(hostile_lab) -> None:
    server = hostile_lab["server"]
    # jobs and models/x/benchmark (GET, POST), auto (GET, PUT) and auto/config (GET, POST)
    # are two routes each
    assert len(ROUTES) == len(route_table()) + 4
    base = f"{server.url}api/training/"
    problems = []
    with httpx.Client(base_url=base, trust_env=False, timeout=60) as http:
        first = http.get("status", headers={"Authorization": f"token {server.token}"})
        cookies = SimpleCookie()
        for header in first.headers.get_list("set-cookie"):
            cookies.load(header)
        login = "; ".join(f"{k}={m.value}" for k, m in cookies.items() if k.startswith("username-"))
        assert login, first.headers
        auth = {"Authorization": f"token {server.token}"}

        def send(*args, **kwargs) -> httpx.Response:
            http.cookies.clear()  # every request carries exactly the credentials it names
            return http.request(*args, **kwargs)

        datasets_before = len(http.get("datasets", headers=auth).json()["datasets"])

        for method, path, body in ROUTES:
            sep = "&" if "?" in path else "?"
            for name, kwargs in (
                ("no token", {}),
                ("wrong token", {"headers": {"Authorization": "token wrong-" + server.token}}),
                ("wrong bearer", {"headers": {"Authorization": "Bearer " + server.token[::-1]}}),
                ("wrong query token", {"url": f"{path}{sep}token=nope"}),
            ):
                r = send(method, kwargs.pop("url", path), json=body, **kwargs)
                if not _refused(r):
                    problems.append(f"{name}: {method} {path} → {r.status_code} {r.text[:80]}")

            r = send(method, path, json=body, headers=auth)
            want = EXPECTED_RIGHT.get((method, path))
            if r.status_code in (401, 403) or (want is not None and r.status_code != want):
                problems.append(f"right token: {method} {path} → {r.status_code} {r.text[:80]}")

            r = send(method, path, json=body, headers={"Cookie": login})
            if method in ("POST", "PUT"):
                if not _refused(r):
                    problems.append(f"cookie, no XSRF: {method} {path} → {r.status_code}")
            elif r.status_code in (401, 403):
                problems.append(f"cookie: {method} {path} → {r.status_code}")
        # Nothing a refused request asked for happened: one new dataset, the right token's.
        datasets_after = len(http.get("datasets", headers=auth).json()["datasets"])
    assert problems == []
    assert datasets_after == datasets_before + 1
