"""Both clients pick a dropped event stream up where it broke off."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from milady_lab import client as client_mod
from milady_lab.client import AsyncTrainingClient, TrainingClient


class _Dropping(http.server.BaseHTTPRequestHandler):
    """Each connection sends the next event, then closes: a stream that keeps dropping."""

    seen: list[dict[str, list[str]]]

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        self.seen.append(query)
        seq = int(query.get("after", ["0"])[0]) + 1
        body = f"id: {seq}\nevent: job_log\ndata: {json.dumps({'seq': seq})}\n\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def dropping(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    monkeypatch.setattr(client_mod, "RECONNECT_DELAY_S", 0.05)
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (_Dropping,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_sync_events_reconnect_after_the_last_seq(dropping: tuple[str, list]) -> None:
    url, seen = dropping
    with TrainingClient(url, token=None) as tc:
        got = []
        for event in tc.events(after=0, timeout=20):
            got.append(event["seq"])
            if len(got) == 3:
                break
    assert got == [1, 2, 3]
    assert [q["after"] for q in seen[:3]] == [["0"], ["1"], ["2"]]


def test_async_events_reconnect_after_the_last_seq(dropping: tuple[str, list]) -> None:
    url, seen = dropping

    async def follow() -> list[int]:
        got: list[int] = []
        async with AsyncTrainingClient(url, token=None) as tc:
            async for event in tc.events(after=0, timeout=20):
                got.append(event["seq"])
                if len(got) == 3:
                    break
        return got

    assert asyncio.run(follow()) == [1, 2, 3]
    assert [q["after"] for q in seen[:3]] == [["0"], ["1"], ["2"]]
