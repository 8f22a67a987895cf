"""What a torch training step records and how it stops: the token rate, peak memory, the
RNG state a checkpoint keeps, and the exception a cancel raises mid-step. Shared by the SFT
loop (``torch.py``) and the DPO/KTO steps (``preference_torch.py``), which both need them
and must not import each other."""

from __future__ import annotations

import random
from typing import Any, Required, TypedDict

import torch

from ..callbacks import MetricPoint
from .common import peak_rss_bytes


class RngState(TypedDict, total=False):
    """The random state a checkpoint keeps, so a resume redoes a step exactly."""

    python: Required[tuple[Any, ...]]  # ``random.getstate()``
    torch: Required[torch.Tensor]
    cuda: list[torch.Tensor]  # one per GPU, where there are GPUs


def rate(done: Any) -> float:
    """Trained (non-padding) tokens per second of training steps, the warm-up step
    left out once there are others: what ``bench_training.py`` compares."""
    steady = done.train_time - done.warmup_time
    if steady > 0 and done.trained_tokens > done.warmup_tokens:
        return (done.trained_tokens - done.warmup_tokens) / steady
    return done.trained_tokens / done.train_time if done.train_time else 0.0


def record_step(
    done: Any, it: int, tokens: int, step_time: float, loss: Any, lr: float, device: torch.device
) -> MetricPoint:
    """Count optimizer step ``it`` (``tokens`` trained in ``step_time`` s; the first step of
    this process is the warm-up) into the totals ``done`` keeps, and return its metric."""
    done.train_time += step_time
    done.trained_tokens += tokens
    done.last_loss = loss
    if it == done.start:
        done.warmup_tokens, done.warmup_time = tokens, step_time
    return {
        "iteration": it + 1,
        "loss": done.last_loss,
        "learningRate": lr,
        "tokensPerSecond": rate(done),
        "trainedTokens": done.trained_tokens,
        "peakMemory": peak_memory(device),
    }


class StopRequested(Exception):
    """Raised by a stop point (a decoder layer's hook) when a cancel arrives mid-step."""


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss_bytes()


def rng_state() -> RngState:
    state: RngState = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: RngState) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
