"""``models chat``: streamed replies from the fine-tuned model, stoppable between tokens."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from milady_lab.cli import main
from milady_lab.config import Settings
from milady_lab.errors import InputError
from milady_lab.models.evaluation.chat import ChatSession

from .conftest import one_thread


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["llama.cpp", "torch"])
def test_stream_and_stop(settings: Settings, model: dict[str, Any], engine: str) -> None:
    with one_thread():
        session = ChatSession(settings, model, engine=engine, max_tokens=24)
        pieces = list(session.stream("hello there friend"))
        assert len(pieces) >= 2 and "".join(pieces).strip()
        assert session.messages[-1] == {"role": "assistant", "content": "".join(pieces)}
        # Stop after the first piece: generation ends there.
        stopped = []
        for piece in session.stream("how are you today"):
            stopped.append(piece)
            session.stop.set()
        assert len(stopped) == 1
    if engine == "llama.cpp":  # the fused GGUF is cached for the next session
        assert (settings.home / "chat" / f"{model['id']}-f16.gguf").is_file()


def test_bad_options_are_input_errors(settings: Settings, model: dict[str, Any]) -> None:
    with pytest.raises(InputError, match="engine"):
        ChatSession(settings, model, engine="ollama")
    with pytest.raises(InputError, match="max tokens"):
        ChatSession(settings, model, engine="torch", max_tokens=0)
    session = ChatSession(settings, model, engine="torch", max_tokens=4)
    with pytest.raises(InputError, match="empty"):
        list(session.stream("  "))


@pytest.mark.slow
def test_cli_chat_prints_the_reply(
    settings: Settings, model: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = settings.as_env()
    with pytest.MonkeyPatch.context() as mp:
        for k, val in env.items():
            mp.setenv(k, val)
        code = main(["models", "chat", model["id"], "--engine", "torch", "-m", "hello", "-m", "hi"])
    out = capsys.readouterr()
    assert code == 0
    assert "through torch" in out.err
    # Greedy: the same two turns through the Python API give the same text.
    with one_thread():
        session = ChatSession(settings, model, engine="torch")
        expected = "".join("".join(session.stream(m)) + "\n" for m in ("hello", "hi"))
    assert out.out == expected and expected.strip()


@pytest.mark.slow
def test_chat_box_streams_and_stops(settings: Settings, model: dict[str, Any]) -> None:
    """The panel's worker thread streams the reply; Stop ends the next one early."""
    from milady_lab.service import TrainingService
    from milady_lab.widgets.chat import ChatBox

    service = TrainingService(settings, reconcile=False)
    try:
        with one_thread():
            box = ChatBox(model["id"], service, engine="torch", max_tokens=400)
            box.message.value = "hello there friend"
            box.send.click()
            box.wait(120)
            assert box.turns[0] == ("you", "hello there friend")
            reply = box.turns[1][1]
            assert reply.strip() and box.send.disabled is False and box.stop.disabled is True
            assert "done (torch)" in box.status.value
            assert "hello there friend" in box.transcript.value

            box.submit("how are you today")
            deadline = time.monotonic() + 60
            while not box.turns[3][1] and time.monotonic() < deadline:
                time.sleep(0.005)
            box.stop.click()  # from the "kernel" thread while the worker generates
            box.wait(120)
            assert box.status.value == "stopped"
            assert box.session.messages[-1] == {"role": "assistant", "content": box.turns[3][1]}
    finally:
        service.close()


def test_model_manager_opens_a_chat_box_for_the_chosen_model(
    settings: Settings, model: dict[str, Any]
) -> None:
    from milady_lab.service import TrainingService
    from milady_lab.widgets._backend import LocalData
    from milady_lab.widgets.chat import ChatBox
    from milady_lab.widgets.models import ModelManager

    service = TrainingService(settings, reconcile=False)
    try:
        mm = ModelManager(LocalData(service))
        mm.pick.value = model["id"]
        mm.chat_button.click()
        (box,) = mm.chat_area.children
        assert isinstance(box, ChatBox) and box.chat_model == model["id"]
        assert box.service is service
    finally:
        service.close()


def test_the_agents_system_prompt_is_the_default_persona(
    settings: Settings, model: dict[str, Any]
) -> None:
    """Without ``system`` a chat speaks as the agent does: its ``response`` calls' prompt."""
    from milady_lab.demo import SYSTEM_PROMPTS, write_demo_db
    from milady_lab.service import TrainingService

    write_demo_db(settings.trajectories, count=30, seed=3, shape="regular")
    service = TrainingService(settings, reconcile=False)
    try:
        assert service.agent_persona() == SYSTEM_PROMPTS["response"]
        session = service.chat_session(model["id"], engine="torch", max_tokens=4)
        assert session.messages == [{"role": "system", "content": SYSTEM_PROMPTS["response"]}]
        chosen = service.chat_session(model["id"], engine="torch", system="Be brief.")
        assert chosen.messages == [{"role": "system", "content": "Be brief."}]
        assert service.chat_session(model["id"], engine="torch", system="").messages == []
    finally:
        service.close()


def test_agent_persona_falls_back_to_all_calls_and_skips_blanks() -> None:
    import polars as pl

    from milady_lab.models.evaluation.chat import agent_persona

    def frame(rows: list[tuple[str | None, str | None]]) -> pl.LazyFrame:
        return pl.LazyFrame(
            {"purpose": [p for p, _ in rows], "systemPrompt": [s for _, s in rows]},
            schema={"purpose": pl.String, "systemPrompt": pl.String},
        )

    rows = [("response", " "), ("response", None), ("evaluation", "judge"), ("other", "b")]
    assert agent_persona(frame([*rows, ("other", "b")])) == "b"
    assert agent_persona(frame([*rows, ("response", "me"), ("other", "b")])) == "me"
    assert agent_persona(frame([("response", "")])) is None
    assert agent_persona(frame([])) is None


_CLI = "import sys; from milady_lab.cli import main; sys.exit(main())"


def _chat_process(settings: Settings, model_id: str) -> tuple[subprocess.Popen[str], int]:
    """``models chat`` with a terminal on stdin, as a person runs it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, "models", "chat", model_id, "--engine", "torch"],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **settings.as_env(), "OMP_NUM_THREADS": "1"},
    )
    os.close(slave)
    return proc, master


class _Reader(threading.Thread):
    """Everything a pipe says, as it says it."""

    def __init__(self, pipe: Any) -> None:
        super().__init__(daemon=True)
        self.pipe, self.text = pipe, ""
        self.start()

    def run(self) -> None:
        while piece := self.pipe.read(1):
            self.text += piece

    def wait_for(self, test: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not test(self.text):
            assert time.monotonic() < deadline, f"waited for output; got {self.text!r}"
            time.sleep(0.02)


@pytest.mark.slow
def test_cli_chat_ctrl_c_at_the_prompt_quits_quietly(
    settings: Settings, model: dict[str, Any]
) -> None:
    """Ctrl-C at the prompt exits 0 at once: no traceback, no library noise; the agent's
    persona is the default system prompt."""
    from milady_lab.demo import write_demo_db

    write_demo_db(settings.trajectories, count=20, seed=5, shape="regular")
    proc, master = _chat_process(settings, model["id"])
    out, err = _Reader(proc.stdout), _Reader(proc.stderr)
    try:
        out.wait_for(lambda t: t.endswith("you> "), 120)
        os.write(master, b"hello there friend\n")
        out.wait_for(lambda t: t.count("you> ") == 2, 120)  # a whole reply, then the prompt
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    out.join(5)
    err.join(5)
    assert "with the agent's persona" in err.text
    for noise in ("Traceback", "KeyboardInterrupt", "Loading weights", "Warning"):
        assert noise not in err.text + out.text, (noise, err.text)


def test_cli_ctrl_c_during_a_reply_stops_it_and_keeps_the_conversation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C while a reply streams ends that reply (the session's stop is set), not the chat."""
    from milady_lab.cli.models import _chat_reply

    class Interrupted:
        stop = threading.Event()

        def stream(self, text: str) -> Any:
            yield "gm "
            raise KeyboardInterrupt

    session = Interrupted()
    _chat_reply(session, "hello")
    assert capsys.readouterr().out == "gm  [stopped]\n"
    assert session.stop.is_set()
