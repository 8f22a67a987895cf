"""The request bodies the panels send, as ``TypedDict``s over the REST body structs' fields.

The panels build bodies from widget values, and a text field gives text: a reward typed
as ``"0.5"``, module names as ``"q_proj, v_proj"``. The structs of
:mod:`milady_lab.api.schema` hold decoded values only, so the panels send these dicts —
the same wire names, every field optional — and the body is decoded once, where the API
decodes every body: by the service in-process, by the server over REST (after
:func:`~._backend.json_typed` gives text fields their JSON type). Each ``TypedDict``
lists exactly its struct's fields; ``tests/widgets/test_remote.py`` checks that, so a
new field of a struct needs its line here.
"""

from __future__ import annotations

from typing import Literal, TypedDict

#: One name, or several (a text field's comma-separated names become a list).
Names = str | list[str]
#: A number, or the text of the field it was typed into (decoded with the body).
NumberText = float | str


class PrivacyBody(TypedDict, total=False):
    """``privacy`` of a build body (``datasets.request.PrivacyRequest``)."""

    redact: bool
    anonymizeHandles: bool


class BuildBody(TypedDict, total=False):
    """``POST /datasets/build`` and ``/preview`` (``datasets.request.BuildDatasetRequest``)."""

    limit: int
    minLlmCallsPerTrajectory: int
    source: Names
    status: Names
    startDate: str  # YYYY-MM-DD
    endDate: str
    timeZone: str  # IANA name, the days' zone
    search: str
    purpose: Names
    model: Names
    minReward: NumberText
    rewardField: Literal["totalReward", "aiJudgeReward"]
    topFraction: float
    scenarioId: Names
    batchId: Names
    includeArchived: bool
    kind: Literal["sft", "pairs", "labelled"]
    minRewardGap: float
    labelThreshold: float
    split: Literal["time", "hash"]
    privacy: PrivacyBody


class JobBody(TypedDict, total=False):
    """``POST /jobs`` (``training.request.StartJobRequest``)."""

    datasetId: str
    backend: str  # mlx | cuda | cpu: the launcher's menu
    model: str
    iterations: int
    batchSize: int
    learningRate: float
    maxTrajectories: int
    resumeFrom: str
    loraRank: int
    loraLayers: int | str  # a count of last layers, or "all"
    promptGradientTokens: int | str  # a count of prompt tokens, or "all"
    evalEvery: int
    checkpointEvery: int
    epochs: float
    maxSeqLength: int
    gradientAccumulation: int
    warmupSteps: NumberText
    lrSchedule: str  # constant | cosine | linear
    loraAlpha: NumberText
    loraDropout: float
    targetModules: Names  # attention, all-linear, or module names
    seed: int
    earlyStoppingPatience: int
    saveBest: bool
    devices: int | Literal["auto"]
    strategy: Literal["ddp", "fsdp"]
    nodes: int
    nodeRank: int
    rdzvEndpoint: str
    objective: str  # sft | dpo | kto
    beta: float
    desirableWeight: float
    undesirableWeight: float


class ImportBody(TypedDict, total=False):
    """``POST /models/{id}/import-ollama`` (``api.schema.ImportOllamaRequest``)."""

    modelName: str
    baseModel: str
    ollamaUrl: str
    mode: str  # model | adapter
    quantization: str  # f16 | q8_0 | f32


class ActivateBody(TypedDict, total=False):
    """``POST /models/{id}/activate`` (``api.schema.ActivateRequest``)."""

    providerModel: str
    force: bool
    create: bool
    ollamaUrl: str


class BenchmarkBody(TypedDict, total=False):
    """``POST /models/{id}/benchmark`` (``api.schema.BenchmarkRequest``); the panel sends
    none: the model's own dataset."""

    datasetId: str
    maxExamples: int
    seed: int
    engine: str  # torch | llama.cpp
    wait: bool  # over REST the panel polls a run: a benchmark outlasts a request


class AutoPolicy(TypedDict, total=False):
    """``PUT /auto`` (``api.schema.AutoPolicy``): the fields given change, the others keep
    their value."""

    enabled: bool
    minNewTrajectories: int
    cooldownHours: float
    iterations: int | None
    backend: str | None
    model: str | None
    activate: str  # never | if-better
    maxExamples: int | None
    ollamaUrl: str | None
    ollamaBaseModel: str | None
    objective: str | None
    beta: float | None
