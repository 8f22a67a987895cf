"""One event interface for a training run, with pluggable outputs.

Shaped like Stable-Baselines3's callbacks: a backend calls these hooks; what happens
with the events (rows in the state store, a tqdm bar, a test's list) is the
callback's business. ``CallbackList`` fans out to several. A backend that obeys
``should_stop`` ends by raising ``TrainingCancelled``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Required, TypedDict


class PreferenceFigures(TypedDict, total=False):
    """The dpo/kto figures of a step (``schema.Metric`` has them all); None where the
    batch held no example of that kind."""

    rewardsChosen: float | None
    rewardsRejected: float | None
    rewardMargin: float | None
    rewardAccuracy: float | None
    logpsChosen: float | None
    logpsRejected: float | None
    klEstimate: float
    #: At evaluations: ``rewardMargin`` on the validation set.
    valRewardMargin: float


class MetricPoint(PreferenceFigures, total=False):
    """One measurement of a run, by ``schema.Metric``'s wire names (the store adds
    ``seq``, ``jobId`` and ``ts``)."""

    iteration: Required[int]
    loss: float
    valLoss: float
    learningRate: float
    tokensPerSecond: float
    trainedTokens: int
    peakMemory: int  # bytes


class RunSummary(TypedDict, total=False):
    """Figures about a run as a whole, kept on the job record (``schema.Job``)."""

    shortenedExamples: int
    droppedTurns: int
    truncatedExamples: int
    droppedExamples: int
    bestIteration: int
    bestValLoss: float


class TrainingCancelled(Exception):
    """Raised by a backend when ``callback.should_stop()`` asked it to end early."""

    def __init__(self, iteration: int) -> None:
        super().__init__(f"training cancelled at iteration {iteration}")
        self.iteration = iteration


class TrainingCallback:
    """Base class; every hook is optional."""

    def on_train_start(self, total_iterations: int, start_iteration: int = 0) -> None:
        """Called once, before the first step (``start_iteration`` > 0 when resuming)."""

    def on_metric(self, metric: MetricPoint) -> None:
        """A measurement: ``iteration`` plus any of ``loss``, ``valLoss``, ``learningRate``,
        ``tokensPerSecond``, ``trainedTokens``, ``peakMemory`` (bytes) and, for dpo/kto,
        the ``PreferenceFigures``."""

    def on_log(self, message: str) -> None:
        """A line worth showing to the user (loading the model, saving, ...)."""

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        """A checkpoint from which a later run can resume was written."""

    def on_stage(self, stage: str) -> None:
        """The run moved to another stage: ``loading``, ``training``, ``evaluating``,
        ``saving``, ``registering`` (``state.JOB_STAGES``)."""

    def on_summary(self, fields: RunSummary) -> None:
        """Figures about the run as a whole, kept on the job record as they change:
        ``shortenedExamples``, ``droppedTurns``, ``truncatedExamples``,
        ``droppedExamples``, ``bestIteration``, ``bestValLoss``."""

    def should_stop(self) -> bool:
        """Polled between steps; True ends the run early (cancel)."""
        return False


class CallbackList(TrainingCallback):
    def __init__(self, callbacks: Iterable[TrainingCallback]) -> None:
        self.callbacks = list(callbacks)

    def on_train_start(self, total_iterations: int, start_iteration: int = 0) -> None:
        for cb in self.callbacks:
            cb.on_train_start(total_iterations, start_iteration)

    def on_metric(self, metric: MetricPoint) -> None:
        for cb in self.callbacks:
            cb.on_metric(metric)

    def on_log(self, message: str) -> None:
        for cb in self.callbacks:
            cb.on_log(message)

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        for cb in self.callbacks:
            cb.on_checkpoint(iteration, path)

    def on_summary(self, fields: RunSummary) -> None:
        for cb in self.callbacks:
            cb.on_summary(fields)

    def on_stage(self, stage: str) -> None:
        for cb in self.callbacks:
            cb.on_stage(stage)

    def should_stop(self) -> bool:
        return any(cb.should_stop() for cb in self.callbacks)


class RecordingCallback(TrainingCallback):
    """Keeps every event in memory (tests, notebooks)."""

    def __init__(self) -> None:
        self.metrics: list[MetricPoint] = []
        self.logs: list[str] = []
        self.checkpoints: list[tuple[int, Path]] = []
        self.summary: RunSummary = {}
        self.stages: list[str] = []

    def on_metric(self, metric: MetricPoint) -> None:
        self.metrics.append(metric.copy())

    def on_log(self, message: str) -> None:
        self.logs.append(message)

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        self.checkpoints.append((iteration, path))

    def on_summary(self, fields: RunSummary) -> None:
        self.summary.update(fields)

    def on_stage(self, stage: str) -> None:
        self.stages.append(stage)
