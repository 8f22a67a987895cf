"""The one reader of a built dataset's line format (``train.jsonl`` / ``valid.jsonl``).

A line is a JSON object: ``{"messages": [{"role", "content"}, ...]}`` (what the builder
writes, with ``metadata``), or ``{"prompt", "completion"}`` / ``{"text"}`` (what mlx-lm
also reads). Training reads strictly (a broken line is an input error naming it);
the benchmark and the widgets read leniently (a broken line is skipped).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from .. import validation as v
from ..api.schema import JsonObject
from ..errors import InputError
from ..trajectories.tools import ChatMessage

#: One chat turn as every reader gives it back: ``role`` and ``content`` (text), and
#: the tool keys when the turn has them (the form ``trajectories.tools`` writes).
Message = ChatMessage

#: How one line of train.jsonl / valid.jsonl reads back into Polars.
LINE_SCHEMA: dict[str, pl.DataType] = {
    "messages": pl.List(pl.Struct({"role": pl.String(), "content": pl.String()})),
    "metadata": pl.Struct(
        {
            "trajectoryId": pl.String(),
            "stepId": pl.String(),
            "model": pl.String(),
            "purpose": pl.String(),
        }
    ),
}


def read_lines(path: Path, *, strict: bool = True) -> Iterator[JsonObject]:
    """The JSON objects of a dataset file, blank lines skipped. ``strict``: a line that
    is not a JSON object is an ``InputError`` naming it; otherwise it is skipped."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                if strict:
                    raise InputError(f"{path.name} line {n} is not valid JSON: {exc}") from None
                continue
            if isinstance(row, dict):
                yield row
            elif strict:
                raise InputError(f"{path.name} line {n} is not a JSON object")


def line_messages(row: JsonObject, *, strict: bool = True) -> list[Message] | None:
    """The conversation of a line (``messages``, or ``prompt``/``completion`` as a user
    and an assistant turn); None for a ``text`` line. A malformed ``messages`` list is
    an ``InputError`` when ``strict``, else None. Contents that are not strings become
    strings when ``strict`` (as training always did), and make the line None otherwise."""
    if "messages" in row:
        msgs = row["messages"]
        ok = isinstance(msgs, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in msgs
        )
        if not ok:
            if strict:
                raise InputError("a dataset line has a malformed 'messages' list")
            return None
        if not strict and not all(_readable(m) for m in msgs):
            return None
        return [_message(m) for m in msgs]
    if "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
        if not strict and not (isinstance(prompt, str) and isinstance(completion, str)):
            return None
        return [
            {"role": "user", "content": str(prompt)},
            {"role": "assistant", "content": str(completion)},
        ]
    return None


#: Tool-use keys a message keeps (Hugging Face chat-template form, ``trajectories.tools``).
_TOOL_KEYS = ("tool_calls", "tool_call_id", "name")


def _readable(m: JsonObject) -> bool:
    """A lenient reader's message: text content, or none beside tool calls."""
    content = m.get("content")
    return isinstance(content, str) or (content is None and isinstance(m.get("tool_calls"), list))


def _message(m: JsonObject) -> Message:
    out: Message = {"role": m["role"], "content": str(m.get("content") or "")}
    out.update({k: m[k] for k in _TOOL_KEYS if m.get(k) is not None})
    return out


def read_chats(path: Path, max_examples: int, seed: int) -> list[list[Message]]:
    """Chats ending in a non-blank assistant reply (lenient: other lines are skipped);
    a seeded sample, in file order, when there are more than ``max_examples``."""
    chats = []
    for row in read_lines(path, strict=False):
        chat = line_messages(row, strict=False)
        last = chat[-1] if chat and len(chat) >= 2 else None
        if last is not None and last["role"] == "assistant" and last["content"].strip():
            chats.append(chat)
    if len(chats) > max_examples:
        keep = sorted(random.Random(seed).sample(range(len(chats)), max_examples))
        chats = [chats[i] for i in keep]
    return chats


def example_texts(folder: Path, limit: int = 5000) -> list[str]:
    """The text of each example of a dataset folder (all turns joined), at most ``limit``,
    for histograms; lenient."""
    texts: list[str] = []
    for name in ("train.jsonl", "valid.jsonl"):
        file = folder / name
        if not file.is_file():
            continue
        for row in read_lines(file, strict=False):
            if len(texts) >= limit:
                return texts
            msgs = row.get("messages")
            if isinstance(msgs, list):
                texts.append(
                    "\n".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))
                )
            else:
                texts.append(
                    " ".join(str(row.get(k, "")) for k in ("prompt", "completion", "text"))
                )
    return texts


def _last_of(messages: pl.Expr, role: str) -> pl.Expr:
    """The content of the last message of ``role`` (null when there is none)."""
    mine = pl.element().struct.field("role") == role
    picked = messages.list.eval(pl.element().filter(mine).struct.field("content"))
    return picked.list.last()


def examples_frame(dataset_dir: str | os.PathLike[str], split: str = "train") -> pl.DataFrame:
    """A built dataset's examples as a flat frame (for notebooks, widgets, histograms).

    Columns: split, system (null when absent), user, assistant, trajectoryId, stepId,
    model, purpose.
    """
    split = v.choice(split, "split", ("train", "valid", "all"), default="train") or "train"
    folder = Path(dataset_dir)
    names = ("train", "valid") if split == "all" else (split,)
    frames = []
    for name in names:
        path = folder / f"{name}.jsonl"
        if not path.exists():
            raise InputError(f"{path} does not exist; is {folder} a dataset folder?")
        raw = (
            pl.read_ndjson(path, schema=LINE_SCHEMA)
            if path.stat().st_size
            else pl.DataFrame(schema=LINE_SCHEMA)
        )
        msgs = pl.col("messages")
        frames.append(
            raw.select(
                pl.lit(name).alias("split"),
                _last_of(msgs.list.head(1), "system").alias("system"),
                _last_of(msgs, "user").alias("user"),
                msgs.list.last().struct.field("content").alias("assistant"),
                pl.col("metadata").struct.unnest(),
            )
        )
    return pl.concat(frames)
