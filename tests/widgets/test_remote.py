"""The same panels in remote mode: a TrainingClient to a real Jupyter server (a
subprocess with milady-lab's extension) over the same state home and trajectories."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from milady_lab.client import TrainingClient
from milady_lab.config import Settings
from milady_lab.demo import MODELS
from milady_lab.service import TrainingService
from milady_lab.widgets import Dashboard, LocalData, RemoteData, TrajectoryExplorer
from milady_lab.widgets.builder import FILTER_FIELDS

from .conftest import DEMO_COUNT, register_model
from .jupyter_proc import JupyterProcess, run_jupyter


@pytest.fixture
def server(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[JupyterProcess]:
    root = tmp_path / "root"
    root.mkdir()
    env = {**settings.as_env(), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with run_jupyter("server", root, tmp_path / "jupyter", env) as jp:
        # so that discovery (Dashboard(remote=True)) finds this server
        monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter" / "runtime"))
        yield jp


@pytest.mark.slow
def test_dashboard_remote_mode(
    server: JupyterProcess, service: TrainingService, tiny_model: Path
) -> None:
    dash = Dashboard(client=TrainingClient(server.url, server.token))
    try:
        assert isinstance(dash.backend, RemoteData)
        assert "remote" in dash.banner.value

        # explorer: the same trajectories, filters and search over REST
        ex = dash.explorer
        assert ex.frame.height == DEMO_COUNT
        assert ex.frame.get_column("id").to_list() == (
            service.trajectories_frame().collect().get_column("id").to_list()
        )
        ex.min_calls.value = 5
        assert 0 < ex.frame.height < DEMO_COUNT
        ex.min_calls.value = 0
        ex.search.value = "compile"  # no search route: the panel reads the calls itself
        local = TrajectoryExplorer(LocalData(service))
        local.search.value = "compile"
        assert set(ex.frame["id"]) == set(local.frame["id"]) and 0 < ex.frame.height < DEMO_COUNT
        local.close()
        ex.search.value = ""
        ex.rows.value = ex.rows.options[0][1]
        assert ex.selected.height > 0 and "Call 1" in ex.detail.value

        # builder: the server's filters and preview route, counted as the service counts
        b = dash.builder
        assert set(FILTER_FIELDS) <= set(b.fields) and b.can_preview
        dash.wait()
        assert b.last_preview == service.preview_dataset({}).to_dict(), b.last_status
        assert "chat" in b.filters["source"].options
        b.filters["source"].value = "chat"
        b.filters["search"].value = "the"
        dash.wait()
        filtered = {"minLlmCallsPerTrajectory": 1, "source": "chat", "search": "the"}
        assert b.last_preview == service.preview_dataset(filtered).to_dict()
        assert 0 < b.last_preview["trajectoryCount"] < DEMO_COUNT
        b.limit.value = 12
        b.build_button.click()
        dash.wait()
        dash.wait()
        kind, message = b.last_status
        assert kind == "ok" and "12 trajectories" in message, message
        assert b.last_built is not None and b.last_built["options"]["source"] == "chat"
        assert dash.launcher.dataset.value == service.list_datasets()["datasets"][0]["id"]
        # every build field reaches the server, purpose/model/reward included (issue 24)
        shaped = {"purpose": "response", "model": MODELS[0], "minReward": 0.5}
        assert dash.backend.preview_dataset(shaped) == service.preview_dataset(shaped).to_dict()
        built = dash.backend.build_dataset({**shaped, "limit": 5})["options"]
        assert (built["purpose"], built["model"], built["minReward"]) == tuple(shaped.values())

        # launcher: the server's error message, then a real start, live curve, cancel
        jl = dash.launcher
        jl.model.value = "no-such-model-anywhere"
        jl.start_button.click()
        dash.wait()
        kind, message = jl.last_status
        assert kind == "error" and message.startswith("start failed:")
        assert "no-such-model-anywhere" in message and "TrainingAPIError" not in message

        jl.model.value = str(tiny_model)
        jl.iterations.value = 100_000
        jl.batch_size.value = 1
        jl.start_button.click()
        dash.wait()
        job_id = jl.job_id
        assert job_id is not None, jl.last_status
        deadline = time.monotonic() + 120
        while len(jl.train_points) < 2:
            assert time.monotonic() < deadline, service.get_job(job_id)
            jl.poll_once()
            time.sleep(0.3)
        jl.cancel_button.click()
        dash.wait(30)
        assert jl.last_status == ("ok", f"job {job_id} cancelled")
        assert service.get_job(job_id)["job"]["status"] == "cancelled"

        # models: the server's 409 message in the panel
        model = register_model(service)
        dash.models.refresh_button.click()
        assert model["name"] in dash.models.table.value
        dash.models.activate_button.click()
        dash.wait()
        kind, message = dash.models.last_status
        assert kind == "error" and message.startswith("activate failed:") and "import" in message
    finally:
        dash.close()


def test_dashboard_remote_discovers_the_server(server: JupyterProcess) -> None:
    dash = Dashboard(remote=True)
    try:
        assert isinstance(dash.backend, RemoteData)
        assert dash.backend.client.base_url.rstrip("/") == server.url
        assert dash.explorer.frame.height == DEMO_COUNT
    finally:
        dash.close()


class _AgentLikeClient:
    """A client to a server with only the spec's routes (a Milady agent): no OpenAPI
    document, no preview. Only what the builder calls is answered."""

    base_url = "http://127.0.0.1:2138"

    def __init__(self, service: TrainingService) -> None:
        self.service = service
        self.built: list[dict] = []

    def openapi(self) -> dict:
        from milady_lab.client import TrainingAPIError

        raise TrainingAPIError(404, "Not Found")

    def list_datasets(self) -> list[dict]:
        return self.service.list_datasets()["datasets"]

    def build_dataset(self, **kwargs: object) -> dict:
        self.built.append(kwargs)
        return self.service.build_dataset({"limit": kwargs.get("limit")})["dataset"]

    def close(self) -> None:
        pass


def test_builder_offers_only_what_an_agent_server_takes(service: TrainingService) -> None:
    from milady_lab.widgets import DatasetBuilder

    client = _AgentLikeClient(service)
    b = DatasetBuilder(RemoteData(client))
    try:
        b.wait()
        assert b.fields == ("limit", "minLlmCallsPerTrajectory") and b.filters == {}
        assert not b.can_preview and "not offered" in b.preview_label.value
        b.limit.value = 4
        b.build_button.click()
        b.wait()
        assert client.built == [{"limit": 4, "min_llm_calls_per_trajectory": 1}]
        assert b.last_status[0] == "ok", b.last_status
    finally:
        b.close()
