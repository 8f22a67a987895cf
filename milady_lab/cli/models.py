"""``milady-lab models list|show|import-ollama|chat|activate|benchmark|export``.

Each command calls the matching ``TrainingService`` method; ``--json`` prints the REST
body. ``ID`` is a model's id, its name (or Ollama name) or ``latest``. ``activate``
refuses an agent config that does not exist unless ``--create``, and a model never
benchmarked unless ``--force``; a warning (Ollama does not list the model) goes to
stderr. ``benchmark`` and ``export`` load models and take a while (the benchmark runs
in its own worker process): ``benchmark`` shows a bar of the examples scored, and
``import-ollama`` its phases (merging, converting, uploading, creating), as a bar on a
terminal and one line per phase elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..api.schema import JsonObject
from ._common import (
    add_command,
    add_json_flag,
    cell,
    print_json,
    print_table,
    service_from,
    whole_number,
)

SCORES = ("coherence", "consistency", "helpfulness")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, import, activate, benchmark and export models")
    msub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_command(msub, "list", "list fine-tuned models with their benchmark scores", _list)
    show_help = "show one model (ID: its id, its name or latest)"
    add_command(msub, "show", show_help, _show, id_dest="model_id")

    imp = msub.add_parser("import-ollama", help="import the model into a local Ollama")
    imp.add_argument("model_id", metavar="ID")
    imp.add_argument("--model-name", help="name in Ollama (default: from the model's name)")
    imp.add_argument(
        "--mode",
        choices=("model", "adapter"),
        help="model (default): one self-contained GGUF; adapter: a GGUF LoRA on --base-model",
    )
    imp.add_argument(
        "--quantization", choices=("f16", "q8_0", "f32"), help="GGUF tensor type (default f16)"
    )
    imp.add_argument("--base-model", help="with --mode adapter: the base as Ollama names it")
    imp.add_argument("--ollama-url", help="loopback URL of Ollama (default http://localhost:11434)")
    add_json_flag(imp)
    imp.set_defaults(handler=_import)

    chat = msub.add_parser("chat", help="talk to the fine-tuned model before activating it")
    chat.add_argument("model_id", metavar="ID")
    chat.add_argument("--engine", choices=("auto", "llama.cpp", "torch"), default="auto")
    chat.add_argument("--system", help="system prompt for the conversation")
    chat.add_argument("--max-tokens", type=int, default=256, help="longest reply (default 256)")
    chat.add_argument("--message", "-m", action="append", help="send this and exit (repeatable)")
    chat.set_defaults(handler=_chat)

    act = msub.add_parser("activate", help="make the agent use this model")
    act.add_argument("model_id", metavar="ID")
    act.add_argument("--provider-model", help="provider model id (default ollama/<ollama name>)")
    act.add_argument(
        "--force",
        action="store_true",
        help="activate even when the gate finds it worse or it was never benchmarked",
    )
    act.add_argument(
        "--create",
        action="store_true",
        help="create the agent config (--agent-config) when it does not exist yet",
    )
    act.add_argument(
        "--ollama-url", help="loopback URL of the Ollama to check (default http://localhost:11434)"
    )
    add_json_flag(act)
    act.set_defaults(handler=_activate)
    _register_rollback(msub)

    bench = msub.add_parser("benchmark", help="score the model against its base on held-out data")
    bench.add_argument("model_id", metavar="ID")
    bench.add_argument(
        "--dataset-id", help="dataset whose valid.jsonl to use (default: the model's)"
    )
    bench.add_argument("--max-examples", help="held-out examples to score (default 32)")
    bench.add_argument("--seed", help="which examples are sampled (default 0)")
    bench.add_argument(
        "--engine",
        choices=("llama.cpp", "torch"),
        help="what generates the replies (default: llama.cpp on the GGUF import-ollama "
        "sends, when installed; torch scores the likelihoods either way)",
    )
    add_json_flag(bench)
    bench.set_defaults(handler=_benchmark)

    exp = msub.add_parser("export", help="fuse the adapter into its base: HF folder or GGUF file")
    exp.add_argument("model_id", metavar="ID")
    exp.add_argument("--format", choices=("hf", "gguf"), default="hf")
    exp.add_argument("--out", help="target path (default: <home>/exports/...); must not exist")
    exp.add_argument(
        "--outtype", choices=("f16", "q8_0", "f32"), help="GGUF weight type (default f16)"
    )
    add_json_flag(exp)
    exp.set_defaults(handler=_export)


def _request(**fields: Any) -> JsonObject:
    return {k: v for k, v in fields.items() if v is not None}


def _bench_cell(bench: Any) -> str | None:
    """``fine-tuned / base`` per score, e.g. ``coh .41/.30 con .95/.10 help .32/.12``."""
    if not hasattr(bench, "get") or "scores" not in bench:  # a dict or an api record
        return None
    short = {"coherence": "coh", "consistency": "con", "helpfulness": "help"}
    return " ".join(
        f"{short[k]} {bench['scores'].get(k, 0):.2f}/{bench.get('baseline', {}).get(k, 0):.2f}"
        for k in SCORES
    )


def _list(args: argparse.Namespace) -> int:
    body = service_from(args, reconcile=False).list_models()
    if args.json:
        print_json(body)
        return 0
    rows = [
        {
            **m,
            "active": "*" if m.get("active") else "",
            "benchmark": _bench_cell(m.get("benchmark")),
        }
        for m in body["models"]
    ]
    print_table(
        rows,
        ["id", "name", "baseModel", "backend", "active", "ollamaName", "finalLoss", "benchmark"],
    )
    if any(r["benchmark"] for r in rows):
        print("benchmark: fine-tuned/base")
    return 0


def _show(args: argparse.Namespace) -> int:
    body = service_from(args, reconcile=False).get_model(args.model_id)
    if args.json:
        print_json(body)
        return 0
    for key, value in body["model"].items():
        shown = _bench_cell(value) if key == "benchmark" and value else cell(value, key)
        print(f"{key}: {shown}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    request = _request(
        modelName=args.model_name,
        baseModel=args.base_model,
        ollamaUrl=args.ollama_url,
        mode=args.mode,
        quantization=args.quantization,
    )
    on_terminal = sys.stderr.isatty()
    bar = tqdm(total=100, unit="%", desc="importing", disable=not on_terminal)
    phases: list[str] = []

    def progress(phase: str, percent: float) -> None:
        """The bar on a terminal; elsewhere (a log) one line per phase."""
        if not on_terminal and phase not in phases:
            print(f"import-ollama: {phase}", file=sys.stderr, flush=True)
        if phase not in phases:
            phases.append(phase)
        bar.set_description(phase)
        bar.update(percent - bar.n)

    try:
        body = service_from(args, reconcile=False).import_ollama(
            args.model_id, request, progress=progress
        )
    finally:
        bar.close()
    if args.json:
        print_json(body)
    else:
        print(f"imported {body['model']['id']} into Ollama as {body['model']['ollamaName']}")
    return 0


def _chat(args: argparse.Namespace) -> int:
    """A conversation on the terminal: Ctrl-C stops a reply, Ctrl-C / Ctrl-D at the prompt quits.

    Without ``--system`` the agent's own system prompt (from its recorded calls) is the
    persona. Importing polars leaves a SIGINT handler with SA_RESTART behind, under which
    ``input()`` never sees Ctrl-C: Python's own handler is put back for the conversation."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        session = service_from(args, reconcile=False).chat_session(
            args.model_id, engine=args.engine, system=args.system, max_tokens=args.max_tokens
        )
        persona = " with the agent's persona" if args.system is None and session.messages else ""
        keys = "" if args.message is not None else " (Ctrl-C stops a reply; at the prompt, quits)"
        print(
            f"chatting with {args.model_id} through {session.engine}{persona}{keys}",
            file=sys.stderr,
        )
        messages = iter(args.message) if args.message is not None else None
        while True:
            try:
                text = next(messages) if messages is not None else input("you> ")
            except (StopIteration, EOFError, KeyboardInterrupt):
                print(file=sys.stderr)
                return 0
            if text.strip():
                _chat_reply(session, text)
    except KeyboardInterrupt:  # while the model loads
        print(file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)


def _chat_reply(session: Any, text: str) -> None:
    """Stream one reply to stdout; Ctrl-C ends it where it is."""
    try:
        for piece in session.stream(text):
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        session.stop.set()
        sys.stdout.write(" [stopped]")
    sys.stdout.write("\n")
    sys.stdout.flush()


def _activate(args: argparse.Namespace) -> int:
    service = service_from(args, reconcile=False)
    request = _request(
        providerModel=args.provider_model,
        force=True if args.force else None,
        create=True if args.create else None,
        ollamaUrl=args.ollama_url,
    )
    body = service.activate_model(args.model_id, request)
    for warning in body.get("warnings", []):
        print(f"milady-lab: warning: {warning}", file=sys.stderr)
    if args.json:
        print_json(body)
    else:
        where = service.settings.agent_config
        print(f"{where} now names {body['activeModel']}: restart the agent to use it")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    """Score the model; a bar of the examples scored (over base and fine-tuned) meanwhile."""
    from tqdm.auto import tqdm

    request = _request(
        datasetId=args.dataset_id,
        maxExamples=whole_number(args.max_examples),
        seed=whole_number(args.seed),
        engine=args.engine,
    )
    bar = tqdm(total=None, unit="ex", desc="benchmark", dynamic_ncols=True, disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        body = service_from(args, reconcile=False).benchmark_model(args.model_id, request, progress)
    finally:
        bar.close()
    if args.json:
        print_json(body)
        return 0
    print(
        f"{body['examples']} held-out examples of {body.get('datasetId')}, seed {body.get('seed')}"
    )
    print_table(
        [
            {"score": k, "base": body["baseline"][k], "fine-tuned": body["scores"][k]}
            for k in SCORES
        ],
        ["score", "base", "fine-tuned"],
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    request = _request(format=args.format, out=args.out, outtype=args.outtype)
    body = service_from(args, reconcile=False).export_model(args.model_id, request)
    if args.json:
        print_json(body)
    else:
        ex = body["export"]
        print(
            f"exported {ex['modelId']} as {ex['format']}: {ex['path']} ({ex['bytes'] / 1e6:.1f} MB)"
        )
    return 0


# -- rollback and history (issue 14) ----------------------------------------------------------
def _register_rollback(msub: argparse._SubParsersAction) -> None:
    deactivate_help = "undo the last activation (restore the agent config)"
    add_command(msub, "deactivate", deactivate_help, _deactivate)
    add_command(msub, "activations", "the history of activations", _activations)
    bench_help = "a model's stored benchmarks"
    add_command(msub, "benchmarks", bench_help, _benchmarks, id_dest="model_id")


def _deactivate(args: argparse.Namespace) -> int:
    service = service_from(args, reconcile=False)
    body = service.deactivate_model(None)
    if args.json:
        print_json(body)
    else:
        now = body.get("activeModelId") or "no model"
        print(
            f"deactivated {body['deactivatedModel']}: {service.settings.agent_config} restored "
            f"({body['restored']}); active now: {now}; restart the agent"
        )
    return 0


def _activations(args: argparse.Namespace) -> int:
    body = service_from(args, reconcile=False).list_activations()
    if args.json:
        print_json(body)
        return 0
    print_table(
        body["activations"],
        ["seq", "modelId", "providerModel", "activatedAt", "forced", "rolledBackAt"],
    )
    return 0


def _benchmarks(args: argparse.Namespace) -> int:
    body = service_from(args, reconcile=False).list_benchmarks(args.model_id)
    if args.json:
        print_json(body)
        return 0
    rows = [
        {"completedAt": b.get("completedAt"), "examples": b.get("examples"),
         "scores": _bench_cell(b), "formatValid": (b.get("scores") or {}).get("formatValid"),
         "actionAccuracy": (b.get("scores") or {}).get("actionAccuracy")}
        for b in body["benchmarks"]
    ]  # fmt: skip
    print_table(rows, ["completedAt", "examples", "scores", "formatValid", "actionAccuracy"])
    return 0
