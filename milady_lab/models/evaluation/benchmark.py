"""Benchmark a fine-tuned model against its base model on held-out agent replies.

``run_benchmark`` (the service side) validates the request (``prepare_benchmark``), then
runs the evaluation in a worker process (``execute_benchmark``) — ``python -m
milady_lab.models.evaluation.benchmark SPEC OUT`` — exactly like training, so a crash or an
out-of-memory kill cannot take the server down. The calling thread blocks until the worker
ends; ``runs`` makes that a tracked run the REST layer starts and polls.

Progress: the worker rewrites ``progress.json`` (``{"done", "total"}``: examples scored
over every variant) after each batch; the calling thread polls it while it waits and
reports each change as a ``benchmark_progress`` event (``{modelId, done, total}``, on
the SSE stream) and to its ``progress(done, total)`` callback (the CLI's bar).

The worker loads the base model once with transformers and the adapter with peft, and
scores both variants in the same run: the adapter enabled (``scores``) and disabled
(``baseline``). Models trained with the mlx backend are evaluated here too with torch,
through the PEFT adapter the job registered; the numbers are comparable because both
variants share the same code path. Scores are defined in ``scores.py``.

Engines: the greedy replies come from torch (the default) or, asked with ``engine:
"llama.cpp"``, from llama.cpp on each variant's GGUF in import-ollama's quantization
(``llama_gen`` says which files and why; measured slower here, see ``_engine``). torch
scores the likelihoods either way. The stored benchmark says which engine ran and its
cost (``cost``: seconds generating, scoring and converting; the GGUF files).

Prompts are what the model trained on: shortened to its job's ``maxSeqLength`` the way
training shortened them (``encode``), so a 512-token model is not asked 3,000-token
agent prompts it never saw whole (and the benchmark pays for 512 tokens, not 3,000).

Speed: examples are sorted by prompt length and run in batches with left padding; each
batch pays for its prompt once: the prompt's KV cache feeds both the teacher-forced pass
over the reference reply (on a copy) and greedy decoding. New tokens are capped at 1.5 ×
the reference reply length + 16 and a batch stops when every row has ended its turn.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict, TypeVar

from ... import validation as v
from ...api import decode
from ...api.schema import BenchmarkRequest, JsonObject
from ...config import ENV_AGENT_TOKEN, Settings
from ...datasets.files import Message, line_messages
from ...errors import ConflictError, InputError, MiladyLabError, NotFoundError, WorkerError
from ...state import EvalStore, StateStore, now_ms
from ...training.backends.chat_tools import render_tool_use
from ...training.backends.common import pick_cpu_threads
from ...training.backends.data import fit_row, reply_start
from ..artifacts import require_peft_adapter, resolve_base_path
from ..handoff.export import source_gguf
from . import llama_gen, scores
from . import purposes as by_purpose

DEFAULT_EXAMPLES = 32
MAX_EXAMPLES = 1000
NEW_TOKENS_FACTOR = 1.5
NEW_TOKENS_SLACK = 16  # a short reference still leaves room for the format's tags
MAX_PROMPT_TOKENS = 1536  # longer prompts keep their last tokens
MAX_REPLY_TOKENS = 512
MAX_NEW_TOKENS = math.ceil(NEW_TOKENS_FACTOR * MAX_REPLY_TOKENS) + NEW_TOKENS_SLACK
#: Each purpose gets at least this many of the sampled held-out examples (all it has, if fewer).
MIN_PER_PURPOSE = 4
#: Replies kept per purpose in the stored benchmark (the model manager shows them).
SAMPLES_PER_PURPOSE = 2
SAMPLE_CHARS = 600
BATCH_SIZE = 32
LOGITS_BUDGET = 2**28  # floats of reply logits held at once (1 GiB): caps the batch
MIN_PREFIX_TOKENS = 16
WORKER_TIMEOUT_S = 3600
POLL_S = 0.25  # how often the waiting thread reads the worker's progress

#: ``progress(done, total)``: examples scored so far over every variant, and in all.
BenchmarkProgress = Callable[[int, int], None]

#: One variant's score block (``scores.summarize``): the score names of ``schema.Scores``.
ScoreBlock = dict[str, float | None]


class Pair(TypedDict):
    """A held-out line of a pairs dataset: the prompt and its two replies."""

    prompt: list[Message]
    chosen: Message
    rejected: Message


class Variant(TypedDict):
    """A model to score: its base and its adapter (paths the worker loads)."""

    basePath: str
    adapterPath: str


class _ActiveVariant(Variant):
    modelId: str
    tokenizerGguf: str | None


class WorkerSpec(TypedDict):
    """What the worker process is given (its ``spec.json``)."""

    modelId: str
    basePath: str
    adapterPath: str
    chats: list[list[Message]]
    seed: int
    device: str
    active: Variant | None
    pairs: NotRequired[list[Pair]]
    progressPath: NotRequired[str]
    #: The training job's maxSeqLength: prompts are shortened as training shortened them.
    maxSeqLength: NotRequired[int]
    #: What generates the replies (``schema.BenchmarkEngine``; torch when absent).
    engine: NotRequired[str]
    #: llama.cpp: the GGUF files' quantization and, per variant, its file.
    quantization: NotRequired[str]
    ggufs: NotRequired[dict[str, llama_gen.GgufSource]]


class WorkerResult(TypedDict):
    """What the worker writes back: per variant, per example figures (``PerExample``)."""

    examples: int
    perExample: dict[str, dict[str, list[Any]]]
    pairWins: NotRequired[dict[str, list[bool]]]
    engine: NotRequired[str]
    cost: NotRequired[JsonObject]  # ``schema.BenchmarkCost``


class ScoreReport(TypedDict):
    """The score blocks of a benchmark (``report``)."""

    scores: ScoreBlock | None
    baseline: ScoreBlock | None
    active: ScoreBlock | None
    intervals: dict[str, dict[str, list[float] | None]]
    differences: dict[str, dict[str, dict[str, float] | None]]
    counts: JsonObject
    byPurpose: dict[str, JsonObject]
    macro: NotRequired[dict[str, JsonObject]]
    perPurpose: NotRequired[dict[str, JsonObject]]


class Benchmark(ScoreReport):
    """A benchmark as stored on the model and answered (``schema.BenchmarkAnswer``,
    with the dataset, seed and duration of the run)."""

    modelId: str
    activeModelId: str | None
    completedAt: int
    examples: int
    datasetId: str
    seed: int
    durationSeconds: float
    samples: JsonObject
    engine: NotRequired[str]
    cost: NotRequired[JsonObject]


# -- service side ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PreparedBenchmark:
    """A checked benchmark request: what the worker is given and how its answer is read.
    Every refusal (4xx) happens while preparing, before a run or a worker starts."""

    model_id: str
    spec: WorkerSpec
    purposes: list[str]
    dataset_id: str
    seed: int
    active_model_id: str | None

    @property
    def variants(self) -> int:
        return 2 if self.spec["active"] is None else 3


#: ``finish(benchmark, conn)``: more to write in the transaction that stores the benchmark.
Finish = Callable[[Benchmark, sqlite3.Connection], None]


def run_benchmark(
    settings: Settings,
    store: StateStore,
    model: Mapping[str, Any],
    body: BenchmarkRequest | JsonObject | None = None,
    progress: BenchmarkProgress | None = None,
) -> Benchmark:
    """Score the model and its base on held-out examples; stored on the model record.
    Each step of the way goes to ``progress`` and the event log (``benchmark_progress``)."""
    prepared = prepare_benchmark(settings, store, model, body)
    return execute_benchmark(settings, store, prepared, progress)


def prepare_benchmark(
    settings: Settings,
    store: StateStore,
    model: Mapping[str, Any],
    body: BenchmarkRequest | JsonObject | None = None,
) -> PreparedBenchmark:
    """The request checked against the model and its dataset: the worker's spec."""
    req = body if isinstance(body, BenchmarkRequest) else decode.body(body, BenchmarkRequest)
    max_examples = DEFAULT_EXAMPLES if req.max_examples is None else req.max_examples
    seed = 0 if req.seed is None else req.seed
    dataset_id = req.dataset_id
    if dataset_id is None:
        dataset_id = model.get("datasetId")
        if not dataset_id:
            raise InputError(f"model {model['id']} has no dataset on record; pass datasetId")
    dataset = store.get_dataset(dataset_id) if v.is_valid_id(dataset_id) else None
    if dataset is None:
        raise NotFoundError(f"no dataset with id {str(dataset_id)[:80]!r}")
    valid = Path(dataset["path"]) / "valid.jsonl"
    if not valid.is_file() or valid.stat().st_size == 0:
        raise ConflictError(f"dataset {dataset_id} has no held-out examples (valid.jsonl is empty)")
    adapter = require_peft_adapter(model)
    pairs: list[Pair] | None = None
    if dataset.get("kind") == "pairs":  # scored on the chosen replies, and pair by pair
        pairs, purposes = load_pairs(valid, max_examples, seed)
        chats = [[*p["prompt"], p["chosen"]] for p in pairs]
    else:
        chats, purposes = load_examples_with_purpose(valid, max_examples, seed)
    if not chats:
        raise ConflictError(
            f"no held-out example of dataset {dataset_id} ends with an assistant reply "
            "to compare with"
        )
    base_path = resolve_base_path(settings, model)
    active = _active_variant(settings, store, model)

    spec: WorkerSpec = {
        "modelId": model["id"],
        "basePath": str(base_path),
        "adapterPath": str(adapter),
        "chats": chats,
        "seed": seed,
        "device": "cuda" if model.get("backend") == "cuda" else "cpu",
        "active": None
        if active is None
        else {"basePath": active["basePath"], "adapterPath": active["adapterPath"]},
    }
    if pairs:
        spec["pairs"] = pairs
    if (max_len := _trained_length(store, model)) is not None:
        spec["maxSeqLength"] = max_len
    if _engine(req, base_path, active) == "llama.cpp":
        spec["engine"] = "llama.cpp"
        spec["quantization"] = llama_gen.DEFAULT_QUANTIZATION
        spec["ggufs"] = _gguf_sources(settings, model, base_path, adapter, active)
    return PreparedBenchmark(
        model_id=model["id"],
        spec=spec,
        purposes=list(purposes),
        dataset_id=dataset_id,
        seed=seed,
        active_model_id=None if active is None else active["modelId"],
    )


def execute_benchmark(
    settings: Settings,
    store: StateStore,
    prepared: PreparedBenchmark,
    progress: BenchmarkProgress | None = None,
    *,
    run_id: str | None = None,
    finish: Finish | None = None,
) -> Benchmark:
    """Run the worker, then store the benchmark on the model and in its history. Events
    carry ``run_id`` when the benchmark is a run (``runs``); ``finish`` ends that run in
    the transaction that stores the benchmark, so a poll never sees one without the other."""
    model_id = prepared.model_id
    started = time.monotonic()
    reporter = _Reporter(store, model_id, progress, prepared.variants, run_id)
    result = _run_worker(settings, prepared.spec, reporter)
    body_out: Benchmark = {
        "modelId": model_id,
        **report(result["perExample"], prepared.purposes, prepared.seed, result.get("pairWins")),
        "samples": reply_samples(result["perExample"], prepared.spec["chats"], prepared.purposes),
        "activeModelId": prepared.active_model_id,
        "completedAt": now_ms(),
        "examples": result["examples"],
        "datasetId": prepared.dataset_id,
        "seed": prepared.seed,
        "durationSeconds": round(time.monotonic() - started, 1),
    }
    if "engine" in result:
        body_out["engine"] = result["engine"]
    if "cost" in result:
        body_out["cost"] = result["cost"]
    with store.transaction() as conn:
        store.update_model(model_id, conn, benchmark=body_out)
        EvalStore(store).add_benchmark(body_out, conn)
        store.emit(
            "model_benchmarked",
            f"model {model_id} benchmarked on {body_out['examples']} examples",
            conn,
            modelId=model_id,
            scores=body_out["scores"],
            baseline=body_out["baseline"],
            active=body_out["active"],
            **_run_field(run_id),
        )
        if finish is not None:
            finish(body_out, conn)
    return body_out


def _trained_length(store: StateStore, model: Mapping[str, Any]) -> int | None:
    """The maxSeqLength the model's job trained with (None: no job on record)."""
    job = store.get_job(model["jobId"]) if model.get("jobId") else None
    length = ((job or {}).get("options") or {}).get("maxSeqLength")
    return int(length) if isinstance(length, int) and length > 0 else None


def _engine(req: BenchmarkRequest, base_path: Path, active: _ActiveVariant | None) -> str:
    """The engine asked for (a 400 when llama.cpp cannot run this model), else torch.

    torch is the default because it generates a batch at a time: measured on agent-shaped
    data on 2 shared cores (load 5–6), 4 examples took 154 s with torch and 266 s with
    llama.cpp (158 s of it generating one reply at a time; llama.cpp built without
    OpenMP also collapses when another process takes its cores)."""
    if req.engine == "llama.cpp":
        bases = [base_path] + ([Path(active["basePath"])] if active is not None else [])
        for base in bases:
            llama_gen.require(base)
    return req.engine or "torch"


def _gguf_sources(
    settings: Settings,
    model: Mapping[str, Any],
    base_path: Path,
    adapter: Path,
    active: _ActiveVariant | None,
) -> dict[str, llama_gen.GgufSource]:
    """Each variant's GGUF at import-ollama's default quantization: the model and the
    active one fused, the base alone (``llama_gen`` says why not Ollama's own base)."""
    quant, home = llama_gen.DEFAULT_QUANTIZATION, settings.home
    tok = source_gguf(model)
    out: dict[str, llama_gen.GgufSource] = {
        "scores": {
            "path": str(llama_gen.model_gguf_path(home, model["id"], quant)),
            "basePath": str(base_path),
            "adapterPath": str(adapter),
            "tokenizerGguf": None if tok is None else str(tok),
            "name": str(model.get("name") or model["id"]),
        },
        "baseline": {
            "path": str(llama_gen.base_gguf_path(home, base_path, quant)),
            "basePath": str(base_path),
            "adapterPath": None,
            "tokenizerGguf": None if tok is None else str(tok),
            "name": base_path.name,
        },
    }
    if active is not None:
        out["active"] = {
            "path": str(llama_gen.model_gguf_path(home, active["modelId"], quant)),
            "basePath": active["basePath"],
            "adapterPath": active["adapterPath"],
            "tokenizerGguf": active["tokenizerGguf"],
            "name": active["modelId"],
        }
    return out


def _run_field(run_id: str | None) -> dict[str, str]:
    """An event's ``runId`` when the benchmark is a run, else nothing."""
    return {} if run_id is None else {"runId": run_id}


def _active_variant(
    settings: Settings, store: StateStore, model: Mapping[str, Any]
) -> _ActiveVariant | None:
    """The active model (when it is another one with a PEFT adapter), to score beside."""
    active = next((m for m in store.list_models() if m.get("active")), None)
    if active is None or active["id"] == model["id"]:
        return None
    try:
        adapter = require_peft_adapter(active)
        base = resolve_base_path(settings, active)
    except MiladyLabError:
        return None  # its files are gone: nothing to compare with in this run
    tok = source_gguf(active)
    return {
        "modelId": active["id"],
        "basePath": str(base),
        "adapterPath": str(adapter),
        "tokenizerGguf": None if tok is None else str(tok),
    }


def report(
    per_example: Mapping[str, Mapping[str, list[Any]]],
    purposes: Sequence[str],
    seed: int,
    pair_wins: Mapping[str, Sequence[bool]] | None = None,
) -> ScoreReport:
    """The body's score blocks: each variant's scores, intervals, paired differences
    of the fine-tuned model against the others, example counts and the per-purpose split
    (each purpose's scores and paired differences);
    with ``pair_wins`` (a pairs dataset) each block gains ``preferenceAccuracy``."""
    variants = {k: scores.PerExample.from_dict(v) for k, v in per_example.items()}
    tuned = variants["scores"]
    blocks = {
        label: scores.summarize(variants[label]) if label in variants else None
        for label in ("scores", "baseline", "active")
    }
    groups: dict[str, list[int]] = {}
    for i, purpose in enumerate(purposes):
        groups.setdefault(purpose or "unknown", []).append(i)
    body: ScoreReport = {
        "scores": blocks["scores"],
        "baseline": blocks["baseline"],
        "active": blocks["active"],
        "intervals": {label: scores.interval(pe, seed) for label, pe in sorted(variants.items())},
        "differences": {
            label: scores.paired_interval(tuned, variants[label], seed)
            for label in ("baseline", "active")
            if label in variants
        },
        "counts": {
            **scores.counts(tuned),
            # replies the generation cap stopped (not their own end), per variant
            "cutByCap": {
                label: sum(map(bool, per_example[label].get("cut") or []))
                for label in sorted(variants)
            },
        },
        "byPurpose": {
            purpose: {
                "examples": len(rows),
                "counts": scores.counts(tuned.subset(rows)),
                **{label: scores.summarize(pe.subset(rows)) for label, pe in variants.items()},
                # the gate looks here too: a purpose can fall while the pooled scores rise
                "differences": {
                    label: scores.paired_interval(tuned.subset(rows), pe.subset(rows), seed)
                    for label, pe in variants.items()
                    if label != "scores"
                },
            }
            for purpose, rows in sorted(groups.items())
        },
    }
    body["macro"] = {label: macro_average(pe, groups) for label, pe in sorted(variants.items())}
    measured = per_purpose(per_example, purposes)
    if measured:
        body["perPurpose"] = measured
    if pair_wins:
        add_preference(body, pair_wins, seed)
    return body


def macro_average(pe: scores.PerExample, groups: Mapping[str, Sequence[int]]) -> JsonObject:
    """Each score averaged over the purposes (each purpose weighs the same, however many
    examples it has), beside the pooled scores where the common purpose dominates;
    a purpose where a score counts no example is left out of that score's average."""
    per = [scores.summarize(pe.subset(rows)) for rows in groups.values()]
    out: JsonObject = {}
    for name in per[0] if per else ():
        values = [p[name] for p in per if p[name] is not None]
        out[name] = round(sum(values) / len(values), 4) if values else None
    return out


def reply_samples(
    per_example: Mapping[str, Mapping[str, list[Any]]],
    chats: Sequence[Sequence[Message]],
    purposes: Sequence[str],
) -> JsonObject:
    """A few replies per purpose, so an operator can see what the figures mean: the end
    of the prompt, the agent's reply and each variant's, cut to ``SAMPLE_CHARS`` and
    redacted like a dataset (secrets and contacts)."""
    from ...privacy import redact_texts

    labels = sorted(label for label in per_example if per_example[label].get("replies"))
    picked: dict[str, list[int]] = {}
    for i, purpose in enumerate(purposes):
        if len(picked.setdefault(purpose or "unknown", [])) < SAMPLES_PER_PURPOSE:
            picked[purpose or "unknown"].append(i)
    picked = dict(sorted(picked.items()))
    texts: list[str | None] = []
    for rows in picked.values():
        for i in rows:
            prompt = chats[i][-2]["content"] if len(chats[i]) > 1 else ""
            texts.append(prompt[-SAMPLE_CHARS:])
            texts.append(chats[i][-1]["content"][:SAMPLE_CHARS])
            texts += [per_example[label]["replies"][i][:SAMPLE_CHARS] for label in labels]
    clean = iter(redact_texts(texts)[0])
    return {
        purpose: [
            {"promptEnd": next(clean), "reference": next(clean)}
            | {label: next(clean) for label in labels}
            for _ in rows
        ]
        for purpose, rows in picked.items()
    }


def per_purpose(
    per_example: Mapping[str, Mapping[str, Any]], purposes: Sequence[str]
) -> dict[str, JsonObject]:
    """Per call purpose, each variant's fitting measures beside their majority-class
    baselines (``purposes.summarize_purpose``); empty for a result stored before them."""
    out: dict[str, JsonObject] = {}
    for label, columns in sorted(per_example.items()):
        if len(columns.get("agent", {}).get("expected", ())) != len(purposes):
            continue
        rows = by_purpose.from_columns(columns["agent"], purposes)
        for purpose, summary in by_purpose.summarize_purposes(rows).items():
            out.setdefault(purpose, {})[label] = summary
    return out


def add_preference(body: ScoreReport, wins: Mapping[str, Sequence[bool]], seed: int) -> None:
    """``preferenceAccuracy`` into each variant's scores and interval, the differences
    of the fine-tuned model against the others, and the count of pairs."""
    name = scores.PREFERENCE
    for label, won in wins.items():
        if body.get(label) is not None:
            body[label][name] = scores.preference_accuracy(won)
            body["intervals"].setdefault(label, {})[name] = scores.preference_interval(won, seed)
    for label in body["differences"]:
        if label in wins and "scores" in wins:
            body["differences"][label][name] = scores.paired_preference(
                wins["scores"], wins[label], seed
            )
    body["counts"][name] = len(wins.get("scores") or [])


class _Reporter:
    """A benchmark's progress to the caller and, on each change, to the event log."""

    def __init__(
        self,
        store: StateStore,
        model_id: str,
        progress: BenchmarkProgress | None,
        variants: int,
        run_id: str | None = None,
    ) -> None:
        self.store, self.model_id, self.progress = store, model_id, progress
        self.variants, self.run_id = variants, run_id
        self.last: tuple[int, int] | None = None

    def __call__(self, done: int, total: int) -> None:
        if (done, total) == self.last:
            return
        self.last = (done, total)
        if self.progress is not None:
            self.progress(done, total)
        self.store.emit(
            "benchmark_progress",
            f"model {self.model_id}: benchmark {done}/{total} examples",
            modelId=self.model_id,
            done=done,
            total=total,
            **_run_field(self.run_id),
        )

    def read(self, path: Path) -> None:
        """Report what the worker's ``progress.json`` says, if it says anything new."""
        try:
            now = json.loads(path.read_text())
            self(int(now["done"]), int(now["total"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not written yet


def _run_worker(
    settings: Settings, spec: WorkerSpec, report: _Reporter | None = None
) -> WorkerResult:
    """Run the worker process; its own problems come back as errors, a crash as a 500."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".benchmark-", dir=settings.home) as tmp:
        spec_path, out_path, log_path, progress_path = (
            Path(tmp) / n for n in ("spec.json", "out.json", "worker.log", "progress.json")
        )
        spec_path.write_text(json.dumps({**spec, "progressPath": str(progress_path)}))
        if report is not None:
            report(0, len(spec["chats"]) * report.variants)
        env = {**os.environ, **settings.as_env(), "TOKENIZERS_PARALLELISM": "false"}
        env.pop(ENV_AGENT_TOKEN, None)  # the worker reads no agent: it gets no token
        # Sleeping (not spinning) OpenMP threads: with other processes on the cores,
        # spinning threads made small-model steps up to 25x slower (2-core machine).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "milady_lab.models.evaluation.benchmark",
                    str(spec_path),
                    str(out_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            try:
                rc = _wait(proc, progress_path, report)
            except BaseException:  # timeout, KeyboardInterrupt, server shutdown
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise WorkerError("the benchmark was stopped before it finished") from None
        result = json.loads(out_path.read_text()) if out_path.is_file() else None
        if rc != 0 or not isinstance(result, dict):
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            why = "it was killed (out of memory?)" if rc < 0 else f"exit {rc}"
            raise WorkerError(f"the benchmark worker failed ({why}): {tail[0][:300]}")
        return result


def _wait(proc: subprocess.Popen, progress_path: Path, report: _Reporter | None) -> int:
    """The worker's exit status, reporting its progress while it runs."""
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while True:
        try:
            rc = proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise
            rc = None
        if report is not None:
            report.read(progress_path)
        if rc is not None:
            return rc


# -- worker side -----------------------------------------------------------------------------
@dataclass
class Example:
    index: int
    prompt_ids: list[int]
    reply_ids: list[int]  # the assistant turn as the template renders it, end token included
    reference: str
    max_new: int
    prompt: str = ""  # the prompt's messages as text: the actions it offers are read there


@dataclass
class Variant:
    """What one model variant produced over all examples."""

    nll_sum: float = 0.0
    tokens: int = 0
    replies: dict[int, str] | None = None


def load_examples(path: Path, max_examples: int, seed: int) -> list[list[Message]]:
    """Chats ending in an assistant reply; a seeded sample when there are more than asked."""
    return load_examples_with_purpose(path, max_examples, seed)[0]


T = TypeVar("T")


def _sampled_lines(
    path: Path, max_examples: int, seed: int, parse: Callable[[JsonObject], T | None]
) -> tuple[list[T], list[str]]:
    """What ``parse`` makes of each line of a dataset file (lines it refuses are left
    out), a seeded sample when there are more than asked, and each one's recorded call
    purpose ("" when none)."""
    items: list[T] = []
    purposes: list[str] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            item = parse(obj) if isinstance(obj, dict) else None
            if item is not None:
                items.append(item)
                meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
                purpose = meta.get("purpose")
                purposes.append(purpose[:100] if isinstance(purpose, str) else "")
    if len(items) > max_examples:
        keep = stratified(purposes, max_examples, seed)
        items, purposes = [items[i] for i in keep], [purposes[i] for i in keep]
    return items, purposes


def stratified(purposes: Sequence[str], size: int, seed: int) -> list[int]:
    """A seeded sample of ``size`` row indexes (in file order), stratified by purpose:
    each purpose first gets ``MIN_PER_PURPOSE`` rows (all, if it has fewer; the rarest
    first when ``size`` cannot cover every purpose), the rest goes to purposes in
    proportion to their share (largest remainders)."""
    rng = random.Random(seed)
    rows: dict[str, list[int]] = {}
    for i, purpose in enumerate(purposes):
        rows.setdefault(purpose, []).append(i)
    for found in rows.values():
        rng.shuffle(found)
    take = dict.fromkeys(rows, 0)
    left = size
    for purpose in sorted(rows, key=lambda p: (len(rows[p]), p)):
        take[purpose] = min(MIN_PER_PURPOSE, len(rows[purpose]), left)
        left -= take[purpose]
    spare = {p: len(rows[p]) - take[p] for p in rows}
    total = sum(spare.values())
    if left and total:
        shares = {p: left * spare[p] / total for p in rows}
        extra = {p: min(spare[p], math.floor(shares[p])) for p in rows}
        rest = left - sum(extra.values())
        for p in sorted(rows, key=lambda p: (extra[p] - shares[p], p)):
            if rest and extra[p] < spare[p]:
                extra[p], rest = extra[p] + 1, rest - 1
        take = {p: take[p] + extra[p] for p in rows}
    return sorted(i for p, found in rows.items() for i in found[: take[p]])


def load_examples_with_purpose(
    path: Path, max_examples: int, seed: int
) -> tuple[list[list[Message]], list[str]]:
    """``load_examples`` and each chat's recorded call purpose ("" when none)."""
    return _sampled_lines(path, max_examples, seed, _chat)


def load_pairs(path: Path, max_examples: int, seed: int) -> tuple[list[Pair], list[str]]:
    """Held-out lines of a pairs dataset (``{prompt, chosen, rejected}``, each side one
    assistant message with text), a seeded sample when there are more than asked, and
    each pair's recorded call purpose ("" when none)."""
    return _sampled_lines(path, max_examples, seed, _pair)


def _pair(obj: Any) -> Pair | None:
    """A pair line's prompt and its two replies, or None when it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), list):
        return None
    prompt = line_messages({"messages": obj["prompt"]}, strict=False)
    sides: list[Message] = []
    for key in ("chosen", "rejected"):
        turns = obj.get(key)
        last = turns[-1] if isinstance(turns, list) and turns else None
        if not isinstance(last, dict) or not isinstance(last.get("content"), str):
            return None
        sides.append({"role": "assistant", "content": last["content"]})
    if not prompt or not sides[0]["content"].strip():
        return None
    return {"prompt": prompt, "chosen": sides[0], "rejected": sides[1]}


def pair_wins(model: Any, tokenizer: Any, pairs: Sequence[Mapping[str, Any]]) -> list[bool]:
    """Per pair: does ``model`` give the chosen reply a higher summed log-probability
    (its tokens as the chat template renders the turn) than the rejected one?"""
    import torch

    device = next(model.parameters()).device
    wins = []
    with torch.inference_mode():
        for i, p in enumerate(pairs):
            chosen, rejected = (
                reply_logp(model, encode(tokenizer, [*p["prompt"], p[side]], i), device)
                for side in ("chosen", "rejected")
            )
            wins.append(chosen > rejected)
    return wins


def reply_logp(model: Any, example: Example, device: Any) -> float:
    """The summed log-probability of ``example``'s reply tokens after its prompt."""
    import torch

    ids = torch.tensor([example.prompt_ids + example.reply_ids], device=device)
    start = len(example.prompt_ids)
    logits = model(input_ids=ids).logits[0, start - 1 : -1].float()
    target = ids[0, start:, None]
    return float(torch.log_softmax(logits, -1).gather(-1, target).sum())


def _chat(obj: Any) -> list[Message] | None:
    """A line's conversation (tool turns kept, ``dataset_files.line_messages``) when it
    ends in a text reply to score; None otherwise."""
    if not isinstance(obj, dict):
        return None
    chat = line_messages(obj, strict=False)
    if not chat or len(chat) < 2:
        return None
    if chat[-1]["role"] != "assistant" or not chat[-1]["content"].strip():
        return None
    return chat


def _template_texts(tokenizer: Any, prompt: list[Any], reply: Any) -> tuple[str, str]:
    """The prompt (with the generation prompt) and the whole chat as the template renders
    them; earlier tool calls in the form training gave them (``chat_tools``)."""

    def render(msgs: list[Any], _tools: Any) -> tuple[str, str]:
        head = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return head, tokenizer.apply_chat_template([*msgs, reply], tokenize=False)

    return render_tool_use(tokenizer, prompt, None, render)


def encode(
    tokenizer: Any, chat: Sequence[Mapping[str, str]], index: int, max_len: int | None = None
) -> Example:
    """Prompt and reply token ids, split where the chat template starts the reply.

    ``max_len``: the model's training ``maxSeqLength``. A longer example is shortened the
    way training shortened it (``data.fit_row``: the oldest conversation turns of the
    prompt first, never its format instructions), so the model is asked what it learned
    to answer; without it, prompts keep their last ``MAX_PROMPT_TOKENS`` tokens."""
    prompt_msgs, reference = list(chat[:-1]), chat[-1]["content"]
    if getattr(tokenizer, "chat_template", None):
        prompt_text, full_text = _template_texts(tokenizer, prompt_msgs, chat[-1])
        if full_text.startswith(prompt_text):
            reply_text = full_text[len(prompt_text) :].rstrip()
        else:
            reply_text = reference + (tokenizer.eos_token or "")
    else:
        prompt_text = "".join(f"{m['role']}: {m['content']}\n" for m in prompt_msgs) + "assistant: "
        reply_text = reference + (tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(reply_text, add_special_tokens=False)["input_ids"][:MAX_REPLY_TOKENS]
    if max_len is not None and len(prompt_ids) + len(reply_ids) > max_len:
        prompt_ids = _trained_prompt(tokenizer, chat, max_len) or prompt_ids[-max_len:]
    prompt_ids = prompt_ids[-MAX_PROMPT_TOKENS:] if max_len is None else prompt_ids
    # The cap follows the reference: long replies (reflection) are not cut by construction.
    max_new = min(MAX_NEW_TOKENS, math.ceil(NEW_TOKENS_FACTOR * len(reply_ids)) + NEW_TOKENS_SLACK)
    prompt = "\n".join(str(m.get("content") or "") for m in prompt_msgs)
    return Example(index, prompt_ids, reply_ids, reference, max_new, prompt)


def _trained_prompt(
    tokenizer: Any, chat: Sequence[Mapping[str, str]], max_len: int
) -> list[int] | None:
    """The prompt tokens of ``chat`` as training saw it within ``max_len`` (the tokens
    before its last reply's trained tokens); None when training could not fit it."""
    fitted, _ = fit_row(tokenizer, {"messages": [dict(m) for m in chat]}, max_len)
    if fitted is None or (start := reply_start(fitted)) is None:
        return None
    return list(fitted.input_ids[:start])


def stop_token_ids(tokenizer: Any, model: Any) -> set[int]:
    """Every id that ends an assistant turn for this model family."""
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, eos):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(i for i in value if isinstance(i, int))
    vocab = tokenizer.get_vocab()
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
        if token in vocab:
            ids.add(vocab[token])
    return ids


@dataclass
class Prefix:
    """The KV cache of the prompt start all examples share (the agent's system prompt)."""

    length: int
    cache: Any  # batch of one


def shared_prefix(examples: Sequence[Example]) -> list[int]:
    """The longest common start of every prompt, leaving each at least one token of its own."""
    if not examples:
        return []
    first = examples[0].prompt_ids
    limit = min(len(e.prompt_ids) for e in examples) - 1
    length = 0
    while length < limit and all(e.prompt_ids[length] == first[length] for e in examples):
        length += 1
    return first[:length] if length >= MIN_PREFIX_TOKENS else []


def encode_prefix(model: Any, ids: Sequence[int]) -> Prefix | None:
    import torch

    if not ids:
        return None
    device = next(model.parameters()).device
    kw = _forward_names(model)
    out = model(input_ids=torch.tensor([list(ids)], device=device), use_cache=True, **{kw.keep: 1})
    return Prefix(len(ids), _cache_of(out))


def run_batch(
    model: Any,
    batch: Sequence[Example],
    pad_id: int,
    stop_ids: set[int],
    prefix: Prefix | None = None,
) -> tuple[list[float], list[int], list[list[int]]]:
    """Per example: reply NLL sum, reply token count, greedy tokens (stop token excluded).

    Layout: ``[shared prefix | left padding | own prompt]``, then the reply; padding is
    masked out and position ids count real tokens only, so results equal one-by-one runs.
    """
    kw = _forward_names(model)
    state = _prompt_pass(model, kw, batch, pad_id, prefix)
    nll, counts = _reply_nll(model, kw, batch, pad_id, state)
    generated = _greedy(model, kw, [e.max_new for e in batch], stop_ids, state)
    return nll, counts, generated


@dataclass
class _PromptState:
    """What the prompt pass leaves for the two passes after it."""

    cache: Any
    first: Any  # logits of the first reply position, (n, vocab)
    mask: Any  # attention mask over prefix + prompt, (n, length)
    lengths: Any  # real tokens so far = the next position id, (n,)


def _padded(rows: Sequence[Sequence[int]], pad_id: int, *, left: bool) -> tuple[Any, Any]:
    """``(ids, mask)`` of ``rows`` padded to one length, on the left or the right."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask


def _prompt_pass(
    model: Any, kw: _Names, batch: Sequence[Example], pad_id: int, prefix: Prefix | None
) -> _PromptState:
    """Run every prompt (after the shared prefix, whose cache is reused) in one forward."""
    import copy

    import torch

    device = next(model.parameters()).device
    n = len(batch)
    skip = prefix.length if prefix is not None else 0
    prompt, s_mask = _padded([e.prompt_ids[skip:] for e in batch], pad_id, left=True)
    prompt, s_mask = prompt.to(device), s_mask.to(device)
    p_mask = torch.cat([torch.ones((n, skip), dtype=torch.long, device=device), s_mask], 1)
    extra: dict[str, object] = {}
    if prefix is not None:
        shared = copy.deepcopy(prefix.cache)
        shared.batch_repeat_interleave(n)
        extra[kw.cache] = shared
    out = model(
        input_ids=prompt,
        attention_mask=p_mask,
        position_ids=skip + (s_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        **extra,
        **{kw.keep: 1},
    )
    return _PromptState(_cache_of(out), out.logits[:, -1, :].float(), p_mask, skip + s_mask.sum(-1))


def _reply_nll(
    model: Any, kw: _Names, batch: Sequence[Example], pad_id: int, state: _PromptState
) -> tuple[list[float], list[int]]:
    """Teacher forcing over the reference replies, on a copy of the prompt's cache."""
    import copy

    import torch

    device = state.mask.device
    ref, r_mask = _padded([e.reply_ids for e in batch], pad_id, left=False)
    ref, r_mask = ref.to(device), r_mask.to(device)
    out_ref = model(
        input_ids=ref,
        attention_mask=torch.cat([state.mask, r_mask], 1),
        position_ids=state.lengths[:, None] + torch.arange(ref.shape[1], device=device)[None, :],
        use_cache=True,
        **{kw.cache: copy.deepcopy(state.cache)},
    )
    logits = torch.cat([state.first[:, None, :], out_ref.logits[:, :-1, :].float()], 1)
    del out_ref
    logp = torch.log_softmax(logits, -1).gather(-1, ref[..., None]).squeeze(-1)
    del logits
    return (-(logp * r_mask).sum(-1)).tolist(), r_mask.sum(-1).tolist()


def _greedy(
    model: Any, kw: _Names, caps: list[int], stop_ids: set[int], state: _PromptState
) -> list[list[int]]:
    """Greedy decoding from the prompt's cache; rows that ended leave the batch."""
    import torch

    device = state.mask.device
    generated: list[list[int]] = [[] for _ in caps]
    alive = list(range(len(caps)))
    cache, mask, pos = state.cache, state.mask, state.lengths
    next_tok = state.first.argmax(-1)
    while True:
        keep = []
        for j, tok in enumerate(next_tok.tolist()):
            row = alive[j]
            if tok in stop_ids:
                continue
            generated[row].append(tok)
            if len(generated[row]) < caps[row]:
                keep.append(j)
        if not keep:
            return generated
        if len(keep) < len(alive):
            idx = torch.tensor(keep, device=device)
            cache.batch_select_indices(idx)
            mask, pos, next_tok = mask[idx], pos[idx], next_tok[idx]
            alive = [alive[j] for j in keep]
        mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=mask.dtype, device=device)], 1)
        out = model(
            input_ids=next_tok[:, None],
            attention_mask=mask,
            position_ids=pos[:, None],
            use_cache=True,
            **{kw.cache: cache, kw.keep: 1},
        )
        cache = _cache_of(out)
        pos = pos + 1
        next_tok = out.logits[:, -1, :].argmax(-1)


@dataclass(frozen=True)
class _Names:
    cache: str
    keep: str


def _forward_names(model: Any) -> _Names:
    """The forward() argument names of this transformers version (they were renamed)."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(inner.forward).parameters
    cache = "cache" if "cache" in params else "past_key_values"
    keep = "logits_to_keep" if "logits_to_keep" in params else "num_logits_to_keep"
    return _Names(cache, keep)


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _load(base_path: str, adapter_path: str, device: str) -> tuple[Any, Any, Any]:
    """Tokenizer, base model and the PEFT model around it (adapter named ``default``)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).to(device)
    return tokenizer, base, PeftModel.from_pretrained(base, adapter_path).eval()


#: ``generate(examples, stop_ids, on_example)``: greedy tokens per example index from
#: another engine (``llama_gen``), instead of torch's.
Generate = Callable[[Sequence[Example], set[int], Callable[[], None] | None], dict[int, list[int]]]


class Clock:
    """Seconds the worker spent per phase: the benchmark's cost (``schema.BenchmarkCost``)."""

    def __init__(self) -> None:
        self.seconds = {"generation": 0.0, "scoring": 0.0, "conversion": 0.0}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[phase] += time.monotonic() - started


def score_variant(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    batch_size: int,
    stop_ids: set[int],
    on_batch: Callable[[int], None] | None = None,
    *,
    clock: Clock | None = None,
    generate: Generate | None = None,
) -> dict[str, list[Any]]:
    """Greedy replies and reply NLL of one variant, scored per example (chat order);
    ``on_batch(n)`` after each n examples. The replies are torch's, or ``generate``'s
    (run after torch is done: the two engines never share the cores)."""
    clock = clock or Clock()
    nll_of, tokens_of, greedy = _torch_passes(
        model, tokenizer, examples, batch_size, stop_ids, clock, on_batch, greedy=generate is None
    )
    if generate is not None:
        each = None if on_batch is None else (lambda: on_batch(1))
        with clock("generation"):
            greedy = generate(examples, stop_ids, each)
    replies = {
        i: tokenizer.decode(toks, skip_special_tokens=True).strip() for i, toks in greedy.items()
    }
    caps = {e.index: e.max_new for e in examples}
    order = sorted(replies)
    refs = {e.index: e.reference for e in examples}
    prompts = {e.index: e.prompt for e in examples}
    texts, references = [replies[i] for i in order], [refs[i] for i in order]
    asked = [prompts[i] for i in order]
    per = scores.PerExample.from_replies(
        texts, references, [nll_of[i] for i in order], [tokens_of[i] for i in order], asked
    )
    rows = by_purpose.score_examples(texts, references, asked, [""] * len(order))
    return {
        **per.as_dict(),
        "agent": by_purpose.columns(rows),
        "replies": texts,
        # stopped by the cap, not by itself
        "cut": [len(greedy[i]) >= caps[i] for i in order],
    }


def _torch_passes(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    batch_size: int,
    stop_ids: set[int],
    clock: Clock,
    on_batch: Callable[[int], None] | None,
    *,
    greedy: bool,
) -> tuple[dict[int, float], dict[int, int], dict[int, list[int]]]:
    """Per example index: reply NLL sum, reply token count and, with ``greedy``, torch's
    greedy tokens (``on_batch(n)`` after each batch); else none: another engine generates."""
    import torch

    pad_id = (
        tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else (tokenizer.eos_token_id or 0)
    )
    nll_of: dict[int, float] = {}
    tokens_of: dict[int, int] = {}
    tokens: dict[int, list[int]] = {}
    kw = _forward_names(model)
    with torch.inference_mode():
        with clock("scoring"):
            prefix = encode_prefix(model, shared_prefix(examples))
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            with clock("scoring"):
                state = _prompt_pass(model, kw, batch, pad_id, prefix)
                nll, counts = _reply_nll(model, kw, batch, pad_id, state)
            for e, n_, c in zip(batch, nll, counts, strict=True):
                nll_of[e.index], tokens_of[e.index] = n_, c
            if not greedy:
                continue
            with clock("generation"):
                generated = _greedy(model, kw, [e.max_new for e in batch], stop_ids, state)
            tokens.update((e.index, toks) for e, toks in zip(batch, generated, strict=True))
            if on_batch is not None:
                on_batch(len(batch))
    return nll_of, tokens_of, tokens


def _examples(tokenizer: Any, base: Any, chats: Sequence[Any], spec: Mapping[str, Any]):
    examples = sorted(
        (encode(tokenizer, c, i, spec.get("maxSeqLength")) for i, c in enumerate(chats)),
        key=lambda e: (len(e.prompt_ids), e.index),
    )
    longest_reply = max(len(e.reply_ids) for e in examples)
    vocab = int(base.config.vocab_size)
    batch_size = max(
        1, min(int(spec.get("batchSize") or BATCH_SIZE), LOGITS_BUDGET // (longest_reply * vocab))
    )
    return examples, batch_size


class _Progress:
    """The worker's side of the progress: ``progress.json`` rewritten after each batch."""

    def __init__(self, path: str | None, total: int) -> None:
        self.path = None if path is None else Path(path)
        self.done, self.total = 0, total
        self.write()

    def __call__(self, n: int) -> None:
        self.done += n
        self.write()

    def write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"done": self.done, "total": self.total}))
        os.replace(tmp, self.path)


def evaluate(spec: WorkerSpec, log: Any = sys.stderr) -> WorkerResult:
    """Every variant over the held-out examples, per example; the worker's whole job.

    Variants: the base (adapter disabled, ``baseline``), the model's adapter merged
    (``scores``) and, when the spec names one, the active model's adapter (``active``):
    on the same base it is loaded as a second adapter, else with its own base. With
    engine llama.cpp the replies come from each variant's GGUF (written first when missing).
    """
    import torch

    seed = int(spec["seed"])
    random.seed(seed)
    torch.manual_seed(seed)
    threads = pick_cpu_threads(None, torch.get_num_threads())
    if threads is not None:
        torch.set_num_threads(threads)
    clock = Clock()
    llama = _LlamaEngine(spec, threads or torch.get_num_threads(), clock)
    device = "cuda" if spec.get("device") == "cuda" and torch.cuda.is_available() else "cpu"
    chats = spec["chats"]
    active = spec.get("active")
    tokenizer, base, model = _load(spec["basePath"], spec["adapterPath"], device)
    stop_ids = stop_token_ids(tokenizer, base)
    examples, batch_size = _examples(tokenizer, base, chats, spec)
    out: dict[str, dict[str, list[Any]]] = {}
    wins: dict[str, list[bool]] = {}
    pairs = spec.get("pairs") or []
    done = _Progress(spec.get("progressPath"), len(chats) * (3 if active else 2))

    def timed(label: str, using: tuple[Any, Any, Sequence[Example], int, set[int]]) -> None:
        started = time.monotonic()
        scored, tok, exs, size, stops = using
        out[label] = score_variant(
            scored, tok, exs, size, stops, done, clock=clock, generate=llama.generator(label)
        )
        if pairs:
            with clock("scoring"):
                wins[label] = pair_wins(scored, tok, pairs)
        shown = scores.summarize(scores.PerExample.from_dict(out[label]))
        print(f"{label}: {shown} in {time.monotonic() - started:.1f}s", file=log, flush=True)

    first = (model, tokenizer, examples, batch_size, stop_ids)
    with model.disable_adapter():
        timed("baseline", first)
    if active and active["basePath"] == spec["basePath"]:
        model.load_adapter(active["adapterPath"], adapter_name="active")
        model.set_adapter("active")
        model.merge_adapter()
        timed("active", first)
        model.unmerge_adapter()
        model.set_adapter("default")
    # Merged LoRA layers decode as fast as the base and need no unmerge afterwards.
    model.merge_adapter()
    timed("scores", first)
    if active and active["basePath"] != spec["basePath"]:
        del model, base, first
        tok2, base2, model2 = _load(active["basePath"], active["adapterPath"], device)
        model2.merge_adapter()
        ex2, bs2 = _examples(tok2, base2, chats, spec)
        timed("active", (model2, tok2, ex2, bs2, stop_token_ids(tok2, base2)))
    result: WorkerResult = {
        "examples": len(examples),
        "perExample": out,
        "engine": llama.name,
        "cost": llama.cost(),
    }
    if pairs:
        result["pairWins"] = wins
    return result


class _LlamaEngine:
    """The worker's llama.cpp side (``llama_gen``), or nothing when torch generates: the
    GGUF files written before any torch work, and a generator per variant."""

    def __init__(self, spec: WorkerSpec, threads: int, clock: Clock) -> None:
        llama = spec.get("engine") == "llama.cpp"
        self.ggufs = (spec.get("ggufs") or {}) if llama else {}
        self.name = "llama.cpp" if self.ggufs else "torch"
        self.quantization = spec.get("quantization") or llama_gen.DEFAULT_QUANTIZATION
        self.threads, self.clock = threads, clock
        with clock("conversion"):
            for source in self.ggufs.values():
                llama_gen.ensure_gguf(source, self.quantization)

    def generator(self, label: str) -> Generate | None:
        if not self.ggufs:
            return None
        path = Path(self.ggufs[label]["path"])

        def generate(
            examples: Sequence[Example], stop_ids: set[int], each: Callable[[], None] | None
        ) -> dict[int, list[int]]:
            return llama_gen.generate(
                path,
                examples,
                stop_ids,
                threads=self.threads,
                quantization=self.quantization,
                on_example=each,
            )

        return generate

    def cost(self) -> JsonObject:
        out: JsonObject = {
            f"{phase}Seconds": round(s, 2) for phase, s in self.clock.seconds.items()
        }
        if self.ggufs:
            out["quantization"] = self.quantization
            out["gguf"] = {label: s["path"] for label, s in sorted(self.ggufs.items())}
        return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m milady_lab.models.evaluation.benchmark")
    parser.add_argument("spec", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    spec = json.loads(args.spec.read_text())
    result = evaluate(spec)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
