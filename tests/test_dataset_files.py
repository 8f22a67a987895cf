"""The one reader of the dataset line format: strict for training, lenient elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from milady_lab.datasets.files import example_texts, line_messages, read_chats, read_lines
from milady_lab.errors import InputError


def _write(path: Path, lines: list[object], tail: str = "") -> Path:
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n" + tail, encoding="utf-8")
    return path


def test_strict_reading_names_the_broken_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.jsonl", [{"text": "a"}], "\nnot json\n")
    with pytest.raises(InputError, match=r"train\.jsonl line 3 is not valid JSON"):
        list(read_lines(path))
    _write(path, [{"text": "a"}, [1, 2]])
    with pytest.raises(InputError, match="line 2 is not a JSON object"):
        list(read_lines(path))
    assert list(read_lines(path, strict=False)) == [{"text": "a"}]


def test_line_messages_reads_every_form() -> None:
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert line_messages({"messages": chat}) == chat
    assert line_messages({"prompt": "q", "completion": "a"}) == chat
    assert line_messages({"text": "plain"}) is None
    with pytest.raises(InputError, match="malformed 'messages'"):
        line_messages({"messages": [{"content": "no role"}]})
    assert line_messages({"messages": [{"content": "no role"}]}, strict=False) is None


def test_read_chats_keeps_replies_and_samples_by_seed(tmp_path: Path) -> None:
    chats = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(20)
    ]
    odd = [
        {"prompt": "p", "completion": "c"},
        {"text": "no reply"},
        "junk",
        {"messages": [{"role": "user", "content": "x"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]},
    ]
    path = _write(tmp_path / "valid.jsonl", chats + odd, "not json\n")
    assert len(read_chats(path, 1000, 0)) == 21
    a, b = read_chats(path, 5, 1), read_chats(path, 5, 1)
    assert a == b and len(a) == 5
    assert read_chats(path, 5, 2) != a


def test_example_texts_joins_turns_and_stops_at_the_limit(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    _write(tmp_path / "train.jsonl", [{"messages": chat}] * 3)
    _write(tmp_path / "valid.jsonl", [{"prompt": "p", "completion": "c"}])
    assert example_texts(tmp_path) == ["q\na"] * 3 + ["p c "]
    assert example_texts(tmp_path, limit=2) == ["q\na"] * 2
