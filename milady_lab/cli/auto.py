"""``milady-lab auto show|set|run-once|watch``: the auto-improve policy and its watcher.

``watch`` is the watcher for a machine without Jupyter: it ticks until Ctrl-C, and
shares the lease with a Jupyter server's watcher, so the two never do a step twice.
"""

from __future__ import annotations

import argparse
import time

from ._common import add_command, add_json_flag, cell, print_json, print_table, service_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("auto", help="auto-improve: retrain when enough new trajectories arrive")
    asub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_command(asub, "show", "the policy, where the last round stands, its decisions", _show)

    st = asub.add_parser("set", help="change the policy (only the options given)")
    st.add_argument("--enabled", choices=("on", "off"))
    st.add_argument("--min-new-trajectories")
    st.add_argument("--cooldown-hours")
    st.add_argument("--iterations")
    st.add_argument("--backend", choices=("mlx", "cuda", "cpu"))
    st.add_argument("--model", help="base model to fine-tune")
    st.add_argument("--activate", choices=("never", "if-better"))
    st.add_argument("--max-examples", help="held-out examples for the benchmark")
    st.add_argument("--ollama-url", help="loopback Ollama an if-better model is imported into")
    st.add_argument("--ollama-base-model")
    st.add_argument("--objective", choices=("sft", "dpo", "kto"), help="what a round trains")
    st.add_argument("--beta", help="dpo/kto: beta of the round's job")
    add_json_flag(st)
    st.set_defaults(handler=_set)

    once_help = "one round now (waits for training), or say why not"
    add_command(asub, "run-once", once_help, _run_once)

    watch = asub.add_parser("watch", help="check the source every few minutes until Ctrl-C")
    watch.add_argument("--interval", type=float, default=300.0, help="seconds (default 300)")
    watch.set_defaults(handler=_watch)


def _print(body: dict) -> None:
    for key, value in body["policy"].items():
        print(f"{key}: {cell(value, key)}")
    state = body.get("state") or {}
    if state.get("round"):
        print(f"round: {cell(state['round'])}")
    if state.get("lastRound"):
        last = state["lastRound"]
        print(f"last round: {last.get('outcome')}: {last.get('message')}")
    print_table(body.get("events") or [], ["ts", "kind", "message"])


def _show(args: argparse.Namespace) -> int:
    body = service_from(args, reconcile=False).get_auto()
    print_json(body) if args.json else _print(body)
    return 0


def _set(args: argparse.Namespace) -> int:
    fields = {
        "enabled": None if args.enabled is None else args.enabled == "on",
        "minNewTrajectories": args.min_new_trajectories,
        "cooldownHours": args.cooldown_hours,
        "iterations": args.iterations,
        "backend": args.backend,
        "model": args.model,
        "activate": args.activate,
        "maxExamples": args.max_examples,
        "ollamaUrl": args.ollama_url,
        "ollamaBaseModel": args.ollama_base_model,
        "objective": args.objective,
        "beta": args.beta,
    }
    body = service_from(args, reconcile=False).set_auto(
        {k: v for k, v in fields.items() if v is not None}
    )
    print_json(body) if args.json else _print(body)
    return 0


def _run_once(args: argparse.Namespace) -> int:
    body = service_from(args).auto_run_once()
    if args.json:
        print_json(body)
    else:
        for d in body["decisions"]:
            print(f"{d['kind']}: {d['message']}")
    return 1 if body["decisions"] and body["decisions"][-1]["kind"] == "auto_failed" else 0


def _watch(args: argparse.Namespace) -> int:
    from ..models.auto import AutoWatcher

    watcher = AutoWatcher(service_from(args), interval_s=max(1.0, args.interval)).start()
    print(f"milady-lab: auto-improve watching every {args.interval:g} s (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    finally:
        watcher.stop()
