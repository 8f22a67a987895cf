"""``make demo``: the whole pipeline, headless, through the same service the UI uses.

explore, then one round (``models/round.py``, the same round auto-improve runs): build a
dataset → fine-tune SmolLM2 (live tqdm bar) → benchmark against the base model (the
table is printed) → import into Ollama when one answers on localhost → activate into a
scratch agent config when the gate lets it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from tqdm.auto import tqdm

from .cli.jobs import update_bar
from .config import Settings
from .errors import MiladyLabError
from .models.round import RoundSettings, RoundState, Step, run_round
from .service import TrainingService
from .state import now_ms
from .training.backends import BACKENDS

OLLAMA_URL = "http://127.0.0.1:11434"
SCORED = ("formatValid", "actionAccuracy")  # the per-purpose table's paired scores


def _ollama_running(url: str = OLLAMA_URL) -> bool:
    try:
        return httpx.get(f"{url}/api/version", timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _cell(value: float | None, bounds: list[float | None] | None) -> str:
    if value is None:
        return "—"
    lo, hi = bounds or (None, None)
    return f"{value:.3f}" + (f" ({lo:.2f}–{hi:.2f})" if lo is not None and hi is not None else "")


def scores_table(bench: dict, name: str) -> str:
    """The benchmark as a Markdown table: each score with its 95 % interval, and how many
    examples it counted (formatValid and actionAccuracy leave some out)."""
    intervals = bench.get("intervals") or {}
    counts = bench.get("counts") or {}
    rows = [f"| score | base model | fine-tuned ({name}) | examples |", "|---|---|---|---|"]
    for key in bench["scores"]:
        base = _cell(bench["baseline"].get(key), (intervals.get("baseline") or {}).get(key))
        tuned = _cell(bench["scores"].get(key), (intervals.get("scores") or {}).get(key))
        rows.append(f"| {key} | {base} | {tuned} | {counts.get(key, bench.get('examples'))} |")
    return "\n".join(rows)


def _change(before: float | None, after: float | None, diff: Any) -> str:
    """``0.00 → 0.84 (+0.72…+0.97)``: both scores and the paired 95 % interval of the change."""
    if before is None or after is None:
        return "—"
    cell = f"{before:.2f} → {after:.2f}"
    if isinstance(diff, dict) and diff.get("low") is not None:
        cell += f" ({diff['low']:+.2f}…{diff['high']:+.2f})"
    return cell


def purposes_table(bench: Mapping[str, Any]) -> str:
    """Each call purpose of the benchmark as a Markdown row: its examples, formatValid and
    actionAccuracy (base → fine-tuned, the paired interval of the change), the majority
    baseline (always the most common action or decision) and should_respond's decision
    accuracy. Empty when the benchmark has no purposes."""
    by = bench.get("byPurpose") or {}
    per = bench.get("perPurpose") or {}
    if not by:
        return ""
    rows = [
        "| purpose | examples | formatValid | actionAccuracy | decision accuracy | majority "
        "baseline |",
        "|---|---|---|---|---|---|",
    ]
    for purpose, block in sorted(by.items(), key=lambda kv: -int(kv[1].get("examples") or 0)):
        diffs = (block.get("differences") or {}).get("baseline") or {}
        base, tuned = block.get("baseline") or {}, block.get("scores") or {}
        kinds = per.get(purpose) or {}
        pb, pt = kinds.get("baseline") or {}, kinds.get("scores") or {}
        decision = _change(pb.get("decisionAccuracy"), pt.get("decisionAccuracy"), None)
        majority = pt.get("decisionBaseline", pt.get("actionBaseline"))
        label = f"{majority:.2f} ({pt.get('majority')})" if majority is not None else "—"
        fmt, act = (_change(base.get(k), tuned.get(k), diffs.get(k)) for k in SCORED)
        rows.append(
            f"| {purpose} | {block.get('examples')} | {fmt} | {act} | {decision} | {label} |"
        )
    return "\n".join(rows)


def _shower(svc: TrainingService, agent_config: object) -> Callable[[Step], None]:
    """What the demo prints of each step of its round: the dataset, a tqdm bar while the
    job trains, the benchmark table, where the model was activated (or why not)."""
    bar: tqdm | None = None

    def show(step: Step) -> None:
        nonlocal bar
        answer = step.answer or {}
        if step.kind == "auto_built":
            print(
                f"dataset {answer['id']}: {answer['trajectoryCount']} trajectories, "
                f"{answer['exampleCount']} examples ({answer['trainCount']} train / "
                f"{answer['validCount']} valid)"
            )
        elif step.kind == "auto_training":
            # In a log (not a terminal) a line every 30 s, not a rewrite every half second.
            every = 0.1 if sys.stderr.isatty() else 30.0
            bar = tqdm(
                total=answer["totalIterations"], unit="it", desc=answer["id"],
                dynamic_ncols=True, mininterval=every,
            )  # fmt: skip
        elif step.kind in ("auto_waiting", "auto_trained") and bar is not None:
            update_bar(bar, dict(answer))
            if step.kind == "auto_trained":
                bar.close()
        if step.kind == "auto_trained":
            print(
                f"trained {answer['trainedTokens']} tokens at {answer['tokensPerSecond']:.0f} tok/s"
            )
            model = svc.get_model(step.fields["modelId"])["model"]
            print(f"model {model['id']} ({model['name']}); benchmarking against the base model …")
        elif step.kind == "auto_benchmarked":
            name = svc.get_model(step.fields["modelId"])["model"]["name"]
            print(f"\n{scores_table(dict(answer), name)}\n")
            if table := purposes_table(dict(answer)):
                print(f"per purpose (base → fine-tuned, paired 95 % interval):\n{table}\n")
        elif step.kind == "auto_activated":
            print(f"activated {answer['activeModel']} in {agent_config}")
        elif step.kind == "auto_not_activated":
            print(f"not activated: {step.message}")  # the gate: worse than the base
        elif step.kind == "auto_failed":
            if bar is not None:
                bar.close()
            print(f"milady-lab: {step.message}", file=sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m milady_lab.demo_pipeline")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--benchmark-examples", type=int, default=32)
    parser.add_argument("--model", help="base model (default: the default base model)")
    parser.add_argument("--backend", choices=BACKENDS, help="default: the best available")
    parser.add_argument("--ollama-url", default=OLLAMA_URL, help=f"default {OLLAMA_URL}")
    parser.add_argument("--ollama-base-model", help="the base's Ollama name (a custom --model)")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    scratch_config = settings.home / "agent" / "milady.json"
    if "MILADY_LAB_AGENT_CONFIG" not in os.environ:
        settings = settings.with_overrides(agent_config=scratch_config)
    svc = TrainingService(settings)
    try:
        status = svc.status()
        print(f"home: {status['home']}  backend: {status['backend']}")
        print(f"source: {status['trajectorySource']} ({status['trajectorySourceFoundBy']})")
        if not status["runtimeAvailable"]:
            print(f"trajectories unavailable: {status.get('runtimeReason')}", file=sys.stderr)
            return 1

        frame = svc.trajectories_frame().collect()
        print(f"{frame.height} trajectories; by source:")
        print(frame.group_by("source").len().sort("len", descending=True))

        ollama = _ollama_running(args.ollama_url)
        if not ollama:
            print(f"no Ollama at {args.ollama_url} — the model will not be imported")
        round_settings = RoundSettings(
            iterations=args.iterations,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            model=args.model,
            backend=args.backend,
            max_examples=args.benchmark_examples,
            activate="if-better",
            ollama_import=ollama,
            ollama_url=args.ollama_url if ollama else None,
            ollama_base_model=args.ollama_base_model,
            # the demo's own scratch config may be created; a real one must exist
            create_agent_config=settings.agent_config == scratch_config,
        )
        rnd = RoundState(id=f"demo-{now_ms()}", source="demo", started_at=now_ms())
        run_round(svc, round_settings, rnd, _shower(svc, settings.agent_config))
        print(f"round {rnd.id}: " + " → ".join(s.removeprefix("auto_") for s in rnd.steps))
        return 1 if rnd.outcome == "auto_failed" else 0
    except MiladyLabError as exc:
        print(f"milady-lab: {exc.message}", file=sys.stderr)
        return 1
    finally:
        svc.close()


if __name__ == "__main__":
    sys.exit(main())
