"""The panels in remote mode (issue 24): one data interface, ``WidgetData``, whose local
and remote sources have the same signatures and pass every field of the build and job
structs on; then every panel action driven through the widgets against a real Jupyter
server (a subprocess with milady-lab's extension), checked against an in-process service
over the same state home, as a user would see it."""

from __future__ import annotations

import html
import inspect
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import msgspec
import pytest
from models.ollama_standin import OllamaStandIn

from milady_lab.api import schema
from milady_lab.api.schema import (
    ActivateAnswer,
    AutoAnswer,
    BenchmarkAnswer,
    Dataset,
    DatasetPreview,
    ImportOllamaAnswer,
    Job,
    JobAnswer,
)
from milady_lab.client import TrainingClient, TrainingRequestError
from milady_lab.config import Settings
from milady_lab.datasets.request import FIELDS as BUILD_FIELDS
from milady_lab.datasets.request import BuildDatasetRequest, PrivacyRequest
from milady_lab.demo import MODELS
from milady_lab.errors import MiladyLabError
from milady_lab.service import TrainingService
from milady_lab.training.request import StartJobRequest
from milady_lab.widgets import (
    Dashboard,
    DatasetBuilder,
    LocalData,
    PanelData,
    RemoteData,
    TrajectoryExplorer,
)
from milady_lab.widgets._backend import (
    ActivateBody,
    AutoPolicy,
    BenchmarkBody,
    BuildBody,
    ImportBody,
    JobBody,
    WidgetData,
)
from milady_lab.widgets._bodies import PrivacyBody

from .conftest import DEMO_COUNT, stop_jobs
from .jupyter_proc import JupyterProcess, run_jupyter

JOB_FIELDS = tuple(f.encode_name for f in msgspec.structs.fields(StartJobRequest))


# -- the interface ------------------------------------------------------------------------


def _members(proto: type) -> list[str]:
    return sorted(
        name
        for name, value in vars(proto).items()
        if inspect.isfunction(value) and not name.startswith("_")
    )


def test_both_sources_implement_every_action_with_the_same_signature() -> None:
    actions = _members(WidgetData)
    assert {"preview_dataset", "start_job", "import_ollama", "set_auto"} <= set(actions)
    for impl in (LocalData, RemoteData):
        for name in actions:
            method = getattr(impl, name)
            assert method is not getattr(WidgetData, name), f"{impl.__name__}.{name} missing"
            assert inspect.signature(method) == inspect.signature(getattr(WidgetData, name)), (
                f"{impl.__name__}.{name}{inspect.signature(method)}"
            )
        assert not set(_members(impl)) - set(actions) - {"__init__"}, (
            f"{impl.__name__} has actions the interface does not list"
        )
    assert issubclass(LocalData, PanelData) and issubclass(RemoteData, PanelData)


#: A value for every field of the build body (``datasets.request.BuildDatasetRequest``).
BUILD_SAMPLE: dict[str, Any] = {
    "limit": 7, "minLlmCallsPerTrajectory": 2, "source": ["chat", "discord"],
    "status": "completed", "startDate": "2026-01-02", "endDate": "2026-03-04",
    "timeZone": "Europe/Lisbon",
    "search": "weather", "purpose": ["response", "action_selection"], "model": MODELS[0],
    "minReward": 0.25, "rewardField": "aiJudgeReward", "topFraction": 0.5,
    "scenarioId": "sc-1", "batchId": ["b-1", "b-2"], "includeArchived": False,
    "kind": "pairs", "minRewardGap": 0.1, "labelThreshold": 0.4, "split": "hash",
    "privacy": {"redact": False, "anonymizeHandles": True},
}  # fmt: skip
#: A value for every field of the job body (``training.request.StartJobRequest``).
JOB_SAMPLE: dict[str, Any] = {
    "datasetId": "ds-1", "backend": "cpu", "model": "tiny", "iterations": 5, "batchSize": 2,
    "learningRate": 1e-3, "maxTrajectories": 40, "resumeFrom": "job-0", "loraRank": 4,
    "loraLayers": 2, "promptGradientTokens": 128, "evalEvery": 2, "checkpointEvery": 0,
    "epochs": 1.5, "maxSeqLength": 256,
    "gradientAccumulation": 2, "warmupSteps": 1, "lrSchedule": "linear", "loraAlpha": 8.0,
    "loraDropout": 0.05, "targetModules": ["q_proj", "v_proj"], "seed": 3,
    "earlyStoppingPatience": 2, "saveBest": False, "devices": 1, "strategy": "ddp",
    "nodes": 1, "nodeRank": 0, "rdzvEndpoint": "127.0.0.1:29400", "objective": "dpo",
    "beta": 0.2, "desirableWeight": 1.5, "undesirableWeight": 0.5,
}  # fmt: skip


def test_each_body_lists_exactly_its_structs_fields() -> None:
    """The panels' bodies are the REST bodies: a struct's new field needs its line here."""
    pairs = [
        (BuildBody, BuildDatasetRequest), (PrivacyBody, PrivacyRequest),
        (JobBody, StartJobRequest), (ImportBody, schema.ImportOllamaRequest),
        (ActivateBody, schema.ActivateRequest), (BenchmarkBody, schema.BenchmarkRequest),
        (AutoPolicy, schema.AutoPolicy),
    ]  # fmt: skip
    for typed, struct in pairs:
        wire = [f.encode_name for f in msgspec.structs.fields(struct)]
        assert set(typed.__annotations__) == set(wire), typed.__name__


_DATASET = {"id": "ds-1", "createdAt": 1, "trajectoryCount": 3, "exampleCount": 5}
_JOB = {
    "id": "job-1", "status": "queued", "datasetId": "ds-1", "backend": "cpu", "model": "tiny",
    "createdAt": 1, "completedAt": None, "progress": 0.0, "currentIteration": 0,
    "totalIterations": 5, "loss": None, "modelId": None,
}  # fmt: skip
_SCORES = {"coherence": 0.5, "consistency": 0.5, "helpfulness": 0.5}
#: What the service (and, unwrapped by the client, the server) answers each action.
ANSWERS: dict[str, tuple[type, dict[str, Any]]] = {
    "datasets/preview": (DatasetPreview, {"trajectoryCount": 3, "exampleCount": 5}),
    "datasets/build": (Dataset, {"dataset": _DATASET}),
    "jobs": (Job, {"job": _JOB}),
    "models/m-1/import-ollama": (
        ImportOllamaAnswer,
        {"model": {"id": "m-1", "ollamaName": "x", "importedAt": 2}},
    ),
    "models/m-1/activate": (ActivateAnswer, {"ok": True, "activeModel": "ollama/x"}),
    "models/m-1/benchmark": (
        BenchmarkAnswer,
        {"modelId": "m-1", "scores": _SCORES, "completedAt": 3},
    ),
    "auto": (AutoAnswer, {"policy": {"enabled": True}, "state": {}, "events": []}),
}
_ROUTE_OF = dict(zip(
    ["preview_dataset", "build_dataset", "start_job", "import_ollama", "activate_model",
     "benchmark_model", "set_auto"], ANSWERS, strict=True,
))  # fmt: skip


def test_sources_read_records_and_json_alike() -> None:
    """The service and client may answer records or their JSON: the panels get records,
    and an answer that breaks the struct is an error naming it, not a half-read dict."""
    job = msgspec.convert(_JOB, Job)
    running = {**_JOB, "status": "running"}
    service = SimpleNamespace(
        settings=SimpleNamespace(home="nowhere"),
        get_job=lambda _id: JobAnswer(job=job),
        list_jobs=lambda: {"jobs": [running]},
        cancel_job=lambda _id: {"job": {"id": "job-1", "status": "cancelled"}},
    )
    local = LocalData(service=service)
    assert local.get_job("job-1") is job
    assert local.list_jobs() == [msgspec.convert(running, Job)]
    with pytest.raises(ValueError, match="not a valid JobAnswer"):
        local.cancel_job("job-1")
    client = SimpleNamespace(get_job=lambda _id: job, list_jobs=lambda: [running, job])
    remote = RemoteData(client)
    assert remote.get_job("job-1") is job
    assert [j.status for j in remote.list_jobs()] == ["running", "queued"]


def _runs_server(polls: list[dict[str, Any]]) -> SimpleNamespace:
    """A client to a server that runs benchmarks: each poll answers the next run."""
    started = {"runId": "bench-1", "modelId": "m-1", "status": "running", "done": 0,
               "total": 0, "startedAt": 1}  # fmt: skip
    calls: list[tuple[str, Any]] = []
    route = {"get": {}, "post": {}}

    def start(model_id: str, **options: Any) -> dict[str, Any]:
        calls.append(("start", (model_id, options)))
        return started

    def poll(model_id: str) -> dict[str, Any]:
        calls.append(("poll", model_id))
        return {**started, **polls.pop(0)}

    return SimpleNamespace(
        calls=calls,
        openapi=lambda: {"paths": {"/api/training/models/{id}/benchmark": route}},
        start_benchmark=start,
        benchmark_run=poll,
    )


def test_remote_benchmark_is_a_run_polled_to_its_end() -> None:
    result = {"modelId": "m-1", "scores": _SCORES, "completedAt": 3}
    client = _runs_server(
        [{"done": 2, "total": 6}, {"done": 6, "total": 6, "status": "completed", "result": result}]
    )
    remote = RemoteData(client)
    remote.benchmark_poll_s = 0.0
    answer = remote.benchmark_model("m-1", {"maxExamples": 3, "wait": True})
    assert answer == msgspec.convert(result, BenchmarkAnswer)
    assert client.calls == [("start", ("m-1", {"maxExamples": 3})), *[("poll", "m-1")] * 2]

    failed = RemoteData(_runs_server([{"status": "failed", "error": "the worker failed: OOM"}]))
    failed.benchmark_poll_s = 0.0
    with pytest.raises(MiladyLabError, match="the worker failed: OOM") as err:
        failed.benchmark_model("m-1")
    assert err.value.status == 503


class _Recorder:
    """A stand-in service that records the bodies LocalData hands it."""

    settings = SimpleNamespace(home="nowhere")

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **_kw: Any) -> dict[str, Any]:
            self.seen.append((name, args[-1] if args else None))
            return ANSWERS[_ROUTE_OF[name]][1]

        return call


def _sent(sent: list[tuple[str, Any]]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path.split("/api/training/")[1]
        if path == "openapi.json":  # a server without a spec: one request per benchmark
            return httpx.Response(404, json={"message": "no spec"})
        sent.append((path, body))
        return httpx.Response(200, json=ANSWERS[path][1])

    return httpx.MockTransport(answer)


def test_every_struct_field_passes_through_both_sources() -> None:
    """What a panel puts in a body reaches the service in-process and the server over
    REST unchanged, for every field the structs define (a new field needs a sample)."""
    assert set(BUILD_SAMPLE) == set(BUILD_FIELDS) and set(JOB_SAMPLE) == set(JOB_FIELDS)
    small = {
        "import_ollama": {
            "modelName": "milady-v2",
            "baseModel": "smollm2",
            "ollamaUrl": "http://127.0.0.1:1",
            "mode": "adapter",
            "quantization": "f16",
        },
        "activate_model": {
            "providerModel": "ollama/x",
            "force": True,
            "create": True,
            "ollamaUrl": "http://127.0.0.1:1",
        },
        "benchmark_model": {
            "datasetId": "ds-1",
            "maxExamples": 8,
            "seed": 1,
            "engine": "torch",
            "wait": False,
        },
    }
    assert set(small["import_ollama"]) == set(ImportBody.__annotations__)
    assert set(small["activate_model"]) == set(ActivateBody.__annotations__)
    assert set(small["benchmark_model"]) == set(BenchmarkBody.__annotations__)
    policy = {"enabled": True, "minNewTrajectories": 5, "cooldownHours": 1.0, "iterations": None,
              "backend": "cpu", "model": None, "activate": "never", "maxExamples": 16,
              "ollamaUrl": "http://127.0.0.1:11434", "ollamaBaseModel": None, "objective": "dpo",
              "beta": 0.3}  # fmt: skip
    assert set(policy) == set(AutoPolicy.__annotations__)

    sent: list[tuple[str, Any]] = []
    remote = RemoteData(TrainingClient("http://127.0.0.1:1", "t", transport=_sent(sent)))
    recorder = _Recorder()
    local = LocalData(service=recorder)
    answers: dict[str, list[Any]] = {"in-process": [], "remote": []}
    for source in (local, remote):
        got = answers[source.mode]
        got.append(source.preview_dataset(BUILD_SAMPLE))
        got.append(source.build_dataset(BUILD_SAMPLE))
        got.append(source.start_job(JOB_SAMPLE))
        for action, body in small.items():
            got.append(getattr(source, action)("m-1", body))
        got.append(source.set_auto(policy))
    # both answer the same records, of the structs' types
    assert answers["in-process"] == answers["remote"]
    kinds = [kind for kind, _ in ANSWERS.values()]
    assert [type(a) for a in answers["remote"]] == kinds
    assert answers["remote"][2].status == "queued" and answers["remote"][1].example_count == 5
    expected = [BUILD_SAMPLE, BUILD_SAMPLE, JOB_SAMPLE, *small.values(), policy]
    assert [body for _, body in recorder.seen] == expected
    # over REST, waiting is the source's own choice (it polls a run where it can)
    expected[5] = {k: v for k, v in small["benchmark_model"].items() if k != "wait"}
    assert [body for _, body in sent] == expected
    assert [path for path, _ in sent] == [
        "datasets/preview", "datasets/build", "jobs", "models/m-1/import-ollama",
        "models/m-1/activate", "models/m-1/benchmark", "auto",
    ]  # fmt: skip

    # text fields (a reward, warmup steps, module names): numbers and lists over REST,
    # whose schema wants JSON types; in-process the service reads the text itself
    sent.clear()
    remote.preview_dataset({"minReward": "0.5", "purpose": "0.5"})
    remote.start_job({"warmupSteps": "3", "loraAlpha": "16", "targetModules": "q_proj, v_proj"})
    # a value that is no number is refused in the server's words, and nothing is sent
    with pytest.raises(TrainingRequestError, match=r"warmupSteps must be an integer, got '1\.5'"):
        remote.start_job({"warmupSteps": "1.5", "targetModules": "attention"})
    assert [body for _, body in sent] == [
        {"minReward": 0.5, "purpose": "0.5"},
        {"warmupSteps": 3, "loraAlpha": 16.0, "targetModules": ["q_proj", "v_proj"]},
    ]
    remote.close()


# -- a live server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, widget_demo_db: Path) -> Settings:
    base = tmp_path_factory.mktemp("remote-lab")
    (base / "home").mkdir()
    return Settings.from_env(
        home=base / "home",
        trajectories=widget_demo_db,
        agent_config=base / "agent" / "milady.json",
        cache=base / "cache",
    )


@pytest.fixture(scope="module")
def server(lab: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    base = tmp_path_factory.mktemp("remote-server")
    (base / "root").mkdir()
    env = {**lab.as_env(), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with run_jupyter("server", base / "root", base / "jupyter", env) as jp:
        yield jp


@pytest.fixture(scope="module")
def local(lab: Settings, server: JupyterProcess) -> Iterator[TrainingService]:
    """The same home in-process: what the server should have done, read directly."""
    svc = TrainingService(lab, reconcile=False)
    yield svc
    stop_jobs(svc)
    svc.close()


@pytest.fixture(scope="module")
def dash(server: JupyterProcess) -> Iterator[Dashboard]:
    d = Dashboard(client=TrainingClient(server.url, server.token))
    yield d
    d.close()


def _settle(panel: Any, rounds: int = 3) -> None:
    """Wait for a click's work and for what its result starts (listing, histogram)."""
    for _ in range(rounds):
        panel.wait(120)


def test_discovery_finds_the_server(
    server: JupyterProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(Path(server.log).parent / "runtime"))
    d = Dashboard(remote=True)
    try:
        assert isinstance(d.backend, RemoteData) and "remote" in d.banner.value
        assert d.backend.client.base_url.rstrip("/") == server.url
        assert d.explorer.frame.height == DEMO_COUNT
    finally:
        d.close()


def test_explorer_lists_filters_searches_and_shows_a_trajectory(
    dash: Dashboard, local: TrainingService
) -> None:
    ex = dash.explorer
    assert ex.frame.get_column("id").to_list() == (
        local.trajectories_frame().collect().get_column("id").to_list()
    )
    assert dash.backend.filter_values() == LocalData(local).filter_values()
    ex.min_calls.value = 5
    assert 0 < ex.frame.height < DEMO_COUNT
    ex.min_calls.value = 0
    ex.search.value = "compile"  # no search route: the source reads the calls itself
    mirror = TrajectoryExplorer(LocalData(local))
    mirror.search.value = "compile"
    assert set(ex.frame["id"]) == set(mirror.frame["id"]) and 0 < ex.frame.height < DEMO_COUNT
    # grouped by purpose: the calls read one detail each, counted as in-process
    ex.group_by.value = mirror.group_by.value = "purpose"
    assert ex.groups_table.value == mirror.groups_table.value
    assert "response" in ex.groups_table.value
    mirror.close()
    ex.search.value = ""
    ex.group_by.value = "source"

    # "Build a dataset from these filters": the builder counts them through the server
    ex.source_filter.value = "chat"
    ex.min_calls.value = 2
    dash.use_filters_button.click()
    _settle(dash)
    b = dash.builder
    assert dash.tabs.selected_index == 1
    assert b.body().items() >= {"source": "chat", "minLlmCallsPerTrajectory": 2}.items()
    assert b.last_preview == LocalData(local).preview_dataset(b.body()), b.last_status
    ex.clear_button.click()
    dash.use_filters_button.click()
    b.min_calls.value = 1
    _settle(dash)
    assert "source" not in b.body()
    first = ex.rows.options[0][1]
    ex.rows.value = first
    assert ex.selected.height > 0 and "Call 1" in ex.detail.value
    calls = len(local.get_trajectory(first)["trajectory"]["llmCalls"])
    assert ex.detail.value.count("Call ") >= calls > 0
    some = ex.frame.get_column("id").to_list()[:4]
    assert dash.backend.calls_of(some).height == LocalData(local).calls_of(some).height


def test_builder_shapes_previews_and_builds_by_purpose_model_and_reward(
    dash: Dashboard, local: TrainingService
) -> None:
    b = dash.builder
    assert set(b.fields) == set(BUILD_FIELDS) and b.can_preview  # the server's build body
    assert set(b.shape) == {"purpose", "model", "minReward", "rewardField", "topFraction"}
    _settle(b)
    b.filters["source"].value = "chat"
    b.shape["purpose"].value = "response"
    b.shape["model"].value = f"{MODELS[0]}, {MODELS[1]}"
    b.shape["minReward"].value = "0.5"
    b.privacy["anonymizeHandles"].value = True
    _settle(b)
    body = b.body()
    want = {"source": "chat", "purpose": "response", "model": list(MODELS[:2]),
            "minReward": "0.5", "rewardField": "totalReward",
            "privacy": {"redact": True, "anonymizeHandles": True}}  # fmt: skip
    assert body.items() >= want.items(), body
    preview = LocalData(local).preview_dataset(body)
    assert b.last_preview == preview, b.last_status
    assert 0 < preview["trajectoryCount"] < local.preview_dataset({})["trajectoryCount"]
    shown = f"{preview['trajectoryCount']:,} trajectories → {preview['exampleCount']:,} examples"
    assert shown in b.preview_label.value

    b.build_button.click()
    _settle(b)
    kind, message = b.last_status
    assert kind == "ok", message
    built = b.last_built
    assert built is not None
    assert (built["trajectoryCount"], built["exampleCount"]) == (
        preview["trajectoryCount"],
        preview["exampleCount"],
    )
    assert f"{preview['trajectoryCount']:,} trajectories" in message
    opts = built["options"]
    assert (opts["purpose"], opts["model"], opts["minReward"]) == (
        "response",
        list(MODELS[:2]),
        0.5,
    )
    stored = next(d for d in local.list_datasets()["datasets"] if d["id"] == built["id"])
    assert stored["trajectoryCount"] == preview["trajectoryCount"]
    row = b.table.value[b.table.value.index(built["id"]) :]
    assert f">{preview['exampleCount']}<" in row.split("</tr>")[0]
    assert dash.launcher.dataset.value == built["id"]  # the launcher follows a new build

    # the best half by the judge's reward: counted by the server as in-process
    b.shape["topFraction"].value = 0.5
    b.shape["rewardField"].value = "aiJudgeReward"
    _settle(b)
    assert b.body()["topFraction"] == 0.5 and b.body()["rewardField"] == "aiJudgeReward"
    assert b.last_preview == LocalData(local).preview_dataset(b.body())
    # a value the server refuses: its message, the panel still usable
    b.shape["minReward"].value = "lots"
    _settle(b)
    kind, message = b.last_status
    assert kind == "error" and "minReward" in message and "TrainingAPIError" not in message
    for key in ("purpose", "model", "minReward"):
        b.shape[key].value = ""
    b.shape["topFraction"].value = 1.0
    b.filters["source"].value = "(any)"
    b.privacy["anonymizeHandles"].value = False
    _settle(b)


def _poll_until(jl: Any, done: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, (jl.job, jl.last_status)
        jl.poll_once()
        time.sleep(0.3)


def test_train_then_benchmark_import_activate_and_roll_back(
    dash: Dashboard, local: TrainingService, tiny_model: Path
) -> None:
    # a small dataset with held-out examples, built from the builder
    b, jl, mm = dash.builder, dash.launcher, dash.models
    b.limit.value = 16
    b.build_button.click()
    _settle(b)
    assert b.last_status[0] == "ok", b.last_status
    dataset = b.last_built
    assert dataset is not None and dataset["validCount"] > 0
    assert jl.dataset.value == dataset["id"]

    # the preference objective reaches the server: dpo on a chat dataset is refused
    jl.backend_choice.value = "cpu"
    jl.model.value = str(tiny_model)
    jl.controls.objective.value = "dpo"
    jl.start_button.click()
    dash.wait()
    kind, message = jl.last_status
    assert kind == "error" and message.startswith("start failed:") and "dpo" in message, message
    assert not jl.start_button.disabled

    # a long run: live curve, then Cancel
    jl.controls.objective.value = "sft"
    jl.iterations.value, jl.batch_size.value = 100_000, 1
    jl.start_button.click()
    dash.wait()
    long_id = jl.job_id
    assert long_id is not None and jl.last_status[0] == "ok", jl.last_status
    _poll_until(jl, lambda: len(jl.train_points) >= 2)
    assert jl.redraws >= 1 and bytes(jl.curve.value[:4]) == b"\x89PNG"
    jl.cancel_button.click()
    dash.wait(30)
    assert jl.last_status == ("ok", f"job {long_id} cancelled")
    assert local.get_job(long_id)["job"]["status"] == "cancelled"

    # a short run to completion: it registers a model, which the Models tab lists
    jl.iterations.value, jl.batch_size.value, jl.learning_rate.value = 4, 2, 1e-2
    c = jl.controls  # typed text: numbers and module names, as the service reads them
    c.warmup_steps.value, c.lora_alpha.value, c.target_modules.value = "1", "12", "q_proj,v_proj"
    jl.start_button.click()
    dash.wait()
    job_id = jl.job_id
    assert job_id not in (None, long_id), jl.last_status
    _poll_until(jl, lambda: (jl.job or {}).get("status") in ("completed", "failed"))
    assert jl.job is not None and jl.job["status"] == "completed", jl.job
    assert [p[0] for p in jl.train_points] == [1.0, 2.0, 3.0, 4.0]
    assert "completed" in jl.info.value and f"{job_id}" in jl.jobs_table.value
    options = local.get_job(job_id)["job"]["options"]
    assert (options["warmupSteps"], options["loraAlpha"]) == (1, 12.0)
    assert options["targetModules"] == ["q_proj", "v_proj"]
    dash.wait()
    model_id = local.get_job(job_id)["job"]["modelId"]
    model = local.get_model(model_id)["model"]
    assert model["name"] in mm.table.value  # listed by the job's end, no Refresh needed
    mm.pick.value = model_id

    # benchmark: the scores in the status line, the chart drawn
    assert mm.chart.layout.display == "none" and "no benchmark yet" in mm.bench_note.value
    mm.benchmark_button.click()
    _settle(mm)
    kind, message = mm.last_status
    assert kind == "ok" and message.startswith("benchmark done: coherence"), message
    assert mm.chart.layout.display == "" and bytes(mm.chart.value[:4]) == b"\x89PNG"
    assert local.get_model(model_id)["model"]["benchmark"]["scores"]

    # import into the Ollama stand-in
    ollama = OllamaStandIn().start()
    try:
        mm.ollama_name.value = "milady-remote"
        mm.ollama_url.value = ollama.url
        mm.import_button.click()
        _settle(mm)
        kind, message = mm.last_status
        assert (kind, message) == ("ok", "imported into Ollama as milady-remote"), message
        assert "milady-remote" in ollama.models and "milady-remote" in mm.table.value

        # activate: the agent config is created and the activation recorded
        mm.create_config.value = True
        mm.force.value = True  # a 4-step model need not beat its base
        mm.activate_button.click()
        _settle(mm)
    finally:
        ollama.stop()
    kind, message = mm.last_status
    assert kind == "ok" and message.startswith("activated: the agent now uses ollama/milady-remote")
    assert local.get_model(model_id)["model"]["active"] is True and "<b>✓</b>" in mm.table.value
    assert local.list_activations()["activations"][0]["modelId"] == model_id

    # roll back: the config as it was, the model no longer active
    mm.deactivate_button.click()
    _settle(mm)
    kind, message = mm.last_status
    assert kind == "ok" and message.startswith(f"rolled back {model_id}"), message
    assert local.get_model(model_id)["model"]["active"] is False
    assert "<b>✓</b>" not in mm.table.value


def test_auto_improve_policy_saved_through_the_server(
    dash: Dashboard, local: TrainingService
) -> None:
    panel = dash.models.auto
    panel.enabled.value = True
    panel.min_new.value = 10**6  # the server's watcher never finds that many
    panel.cooldown.value = 0.5
    panel.iterations.value = 7
    panel.backend_pick.value = "cpu"
    panel.activate.value = "if-better"
    panel.save_button.click()
    dash.wait()
    assert panel.last_status == ("ok", "policy saved: on"), panel.last_status
    policy = local.get_auto()["policy"]
    got = {k: policy[k] for k in ("enabled", "minNewTrajectories", "cooldownHours",
                                  "iterations", "backend", "activate")}  # fmt: skip
    assert got == {"enabled": True, "minNewTrajectories": 10**6, "cooldownHours": 0.5,
                   "iterations": 7, "backend": "cpu", "activate": "if-better"}  # fmt: skip
    assert "auto_policy" in html.unescape(panel.decisions.value)

    panel.model.value = "no-such-model-anywhere"
    panel.save_button.click()
    dash.wait()
    kind, message = panel.last_status
    assert kind == "error" and "no-such-model-anywhere" in message, message
    assert local.get_auto()["policy"]["model"] is None
    panel.reload_button.click()
    assert panel.model.value == "" and panel.iterations.value == 7


# -- a server with only the spec's routes ------------------------------------------------------


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
