"""The real agent in the tests: its published writer code (``tests/agent_kit``, Node)
writing trajectories into real PGlite folders and PostgreSQL databases, and serving its
REST shapes. Plans are what the agent would be asked to record; what lands in the
database is whatever the agent's own code makes of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KIT = Path(__file__).resolve().parents[1] / "agent_kit"
DAY_MS = 24 * 3600 * 1000


def install() -> None:
    """``setup.sh``: once per machine (npm's cache makes it seconds after that)."""
    subprocess.run(["bash", str(KIT / "setup.sh")], check=True, timeout=900)


def _node(script: str, *args: str) -> list[str]:
    return ["node", "--import", "./shim.mjs", script, *args]


def write(plan: dict[str, Any]) -> list[str]:
    """Run the plan through the agent's writer; the trajectory ids it chose."""
    done = subprocess.run(
        _node("write.mjs"),
        cwd=KIT,
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the agent kit failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["ids"]


@contextmanager
def holding(plan: dict[str, Any]) -> Iterator[subprocess.Popen[str]]:
    """The plan written by a process that then keeps the database open (a running agent)."""
    proc = subprocess.Popen(
        _node("write.mjs"),
        cwd=KIT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({**plan, "hold": True}))
    proc.stdin.close()
    for line in proc.stdout:
        if line.strip() == "holding":
            break
    else:
        raise RuntimeError("the agent kit did not start")
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[str]

    def requests(self) -> list[str]:
        import httpx

        return httpx.get(self.url.replace("milady+", "") + "/__requests").json()


@contextmanager
def serving(target: dict[str, str], token: str = "s3cret", export: bool = True) -> Iterator[Served]:
    """The agent's trajectory routes over ``target``, answered by its own code."""
    opts = json.dumps({"target": target, "token": token, "export": export, "agentId": "milady"})
    proc = subprocess.Popen(
        _node("serve.mjs", opts),
        cwd=KIT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        port = json.loads(proc.stdout.readline())["port"]
        yield Served(f"milady+http://127.0.0.1:{port}", proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


# -- what the agent is asked to record ------------------------------------------------------------


def _reply(text: str, action: str = "REPLY") -> str:
    thought = "<thought>answering</thought>"
    return f"<response>{thought}<actions>{action}</actions><text>{text}</text></response>"


def _call(n: int, purpose: str = "response", **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "purpose": purpose,
        "actionType": "runtime.useModel",
        "systemPrompt": "You are Milady, a friendly companion.",
        "userPrompt": f"user message number {n}: how are you today?",
        "response": _reply(f"reply number {n}"),
        "promptTokens": 40 + n,
        "completionTokens": 12,
        "latencyMs": 300 + n,
        "temperature": 0.7,
        "maxTokens": 512,
        **extra,
    }


#: The core writer's one trajectory outside any scenario that no step rewards.
UNREWARDED = 3


def plan(writer: str, target: dict[str, str], workspace: Path | None = None) -> dict[str, Any]:
    """Eight live trajectories (three scenarios/batches, tool calls, a tool-only reply, a
    provider access, a failed one) and, for the agent package, two 40 days old that its
    prune moves to the archive. The core's service gets several steps with rewards, except
    on trajectory ``UNREWARDED``."""
    tool_call = {"toolCallId": "call-1", "toolName": "WEB_SEARCH", "input": {"q": "weather"}}
    trajectories: list[dict[str, Any]] = []
    n = 0
    groups = [("scn-a", "batch-1"), ("scn-a", "batch-1"), ("scn-b", "batch-1"), (None, None)]
    for i in range(8):
        scenario, batch = groups[i % 4]
        calls = []
        for _ in range(1 + i % 3):
            n += 1
            calls.append(_call(n))
        if i == 1 and writer == "agent":
            n += 1
            calls.append(_call(n, toolCalls=[tool_call]))
            n += 1
            calls.append(_call(n, response="", toolCalls=[{**tool_call, "toolCallId": "c2"}]))
        steps = [
            {
                "calls": calls,
                "accesses": [{"providerName": "TIME", "data": {"now": i}, "purpose": "context"}],
            }
        ]
        if writer == "core":
            n += 1
            steps = [{**steps[0], "reward": 0.5}, {"calls": [_call(n)], "reward": 0.25 * i}]
            if i == UNREWARDED:  # nothing rewards it: the service leaves total_reward at 0
                steps = [{k: v for k, v in step.items() if k != "reward"} for step in steps]
        trajectories.append(
            {
                "source": ("discord", "telegram", "chat")[i % 3],
                "status": "error" if i == 7 else "completed",
                "scenarioId": scenario,
                "batchId": batch,
                "steps": steps,
            }
        )
    if writer == "agent":
        for _ in range(2):
            n += 1
            trajectories.append(
                {
                    "source": "telegram",
                    "daysAgo": 40,
                    "steps": [{"calls": [_call(n, purpose="should_respond")]}],
                }
            )
    out: dict[str, Any] = {
        "target": target,
        "writer": writer,
        "agentId": "milady",
        "trajectories": trajectories,
    }
    if workspace is not None and writer == "agent":
        out.update(workspace=str(workspace), prune=True)
    return out


def expected_calls(the_plan: dict[str, Any], ids: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Per trajectory id: (userPrompt, response, tool call names) of each call, in order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for tid, traj in zip(ids, the_plan["trajectories"], strict=True):
        out[tid] = [
            (c["userPrompt"], c["response"], tuple(t["toolName"] for t in c.get("toolCalls", [])))
            for step in traj["steps"]
            for c in step["calls"]
        ]
    return out
