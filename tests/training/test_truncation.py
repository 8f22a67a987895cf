"""Truncation that keeps what matters (issue 26): an agent prompt too long for
``maxSeqLength`` loses its oldest conversation turns first, then tokens from the left,
never its format instructions nor the reply; what went is counted on the job. DPO and
KTO items are cut the same way, a pair's two sides keeping one prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from milady_lab.training.backends.data import (
    Cuts,
    fit,
    fit_row,
    preference_item,
    preference_items,
    tokenize_row,
    tokenized_examples,
    train_and_val_examples,
)
from milady_lab.training.backends.prompt_turns import prompt_layout, without_turns
from milady_lab.training.callbacks import RecordingCallback

from .conftest import write_dataset
from .test_backends import make_spec

SYSTEM = "# About Milady\nMilady is a cheerful agent who answers in TOON.\n# Style\n- be brief"
#: The output format of elizaOS's ``message_handler`` template, with its TOON example.
FORMAT = (
    "fields[3]{name,meaning}:\n- thought | short plan\n- actions | ordered list\n"
    "- text | next message for Milady\n\n"
    "output:\nTOON only. Return exactly one TOON document with the keys above.\n\n"
    "Example:\nthought: Reply briefly.\nactions[1]:\n  - name: REPLY\ntext: Your message here"
)
REPLY = "thought: answer the newest question\nactions[1]:\n  - name: REPLY\ntext: it is red."
SPEAKERS = ("alice", "Milady", "bob")
#: What follows the prompt in the SmolLM2 chat template's rendering: the reply.
TAIL = "<|im_end|>\n<|im_start|>assistant\n" + REPLY + "<|im_end|>\n"


def turn(i: int, n: int) -> str:
    """Conversation line ``i`` of ``n`` as elizaOS's ``formatMessages`` writes it; some
    span two lines, some carry the agent's actions or thought, one has actions only."""
    who = SPEAKERS[i % 3]
    head = f"{10 + i // 60:02d}:{i % 60:02d} ({n - i} minutes ago) [{i:08x}-4bd1-8e3f-{i:012x}]"
    if i == 7:
        return f"{head} (Milady's actions: IGNORE)"
    more = f"\nand a second line of message {i}" if i % 3 == 2 else ""
    if who == "Milady" and i % 2:
        more += f"\n(Milady's internal thought: thing {i} matters)\n (Milady's actions: REPLY)"
    return f"{head} {who}: turn{i} talks about the colour of thing {i}{more}"


def agent_prompt(n: int, context: str = "") -> str:
    """A ``message_handler``-shaped user prompt with ``n`` conversation turns."""
    history = "\n".join(turn(i, n) for i in range(n))
    return (
        "task: Generate dialog and actions for Milady.\n\ncontext:\n"
        f"{context}# Conversation Messages\n{history}\n\n# Available Actions\nREPLY, IGNORE\n\n"
        "rules[2]:\n- think briefly, then respond\n- REPLY goes first\n\n" + FORMAT
    )


def row_of(prompt: str, reply: str = REPLY) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": reply},
        ]
    }


@pytest.fixture(scope="module")
def tok(tiny_llama_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama_dir))


def trained(tok: Any, ex: Any) -> str:
    return tok.decode([t for t, m in zip(ex.input_ids, ex.mask, strict=True) if m])


# -- finding the conversation ------------------------------------------------------------------
def test_the_turns_of_an_agent_prompt_are_found_and_the_format_example_is_not_one() -> None:
    prompt = agent_prompt(6)
    layout = prompt_layout(prompt)
    assert [prompt[a:b].rstrip("\n") for a, b in layout.turns] == [turn(i, 6) for i in range(6)]
    assert prompt[layout.format_start :] == FORMAT  # from ``fields[3]`` to the end
    # The template alone (its TOON example reads like ``name: text`` lines): no turns.
    alone = prompt_layout("task: Generate dialog.\n\n" + FORMAT)
    assert alone.turns == () and alone.format_start == len("task: Generate dialog.\n\n")
    # Without a header or elizaOS's ``(time) [id]``: a run where a speaker speaks twice.
    plain = "Recent chat went like this\nalice: hi\nMilady: hello\nalice: red?\n\noutput:\nx"
    assert [plain[a:b] for a, b in prompt_layout(plain).turns] == [
        "alice: hi\n", "Milady: hello\n", "alice: red?\n",
    ]  # fmt: skip
    # ... but not one where every line has its own speaker (a TOON document), nor a
    # conversation given as an example, nor a lone line.
    for text in (
        "notes\nthought: plan\ntext: hi\nsimple: true\n",
        "Example:\nalice: hi\nMilady: hello\nalice: red?\n",
        "# Conversation Messages\nalice: hi\n",
    ):
        assert prompt_layout(text).turns == (), text
    dropped = without_turns(prompt, layout.turns, 4)
    assert turn(3, 6) not in dropped and turn(4, 6) in dropped and dropped.endswith(FORMAT)


# -- cutting -----------------------------------------------------------------------------------
def test_a_long_agent_prompt_loses_its_oldest_turns_and_keeps_format_and_reply(tok: Any) -> None:
    row = row_of(agent_prompt(30))
    full = tokenize_row(tok, row)
    max_len = len(full) - 150  # a few turns too long
    ex, cuts = fit_row(tok, row, max_len)
    assert ex is not None and len(ex) <= max_len
    k = cuts.turns
    assert cuts == Cuts(turns=k, truncated=False) and 2 < k < 29
    text = tok.decode(ex.input_ids)
    kept = [i for i in range(30) if f"[{i:08x}-" in text]
    assert kept == list(range(k, 30))  # the newest turns, whole; the oldest gone
    assert SYSTEM in text and "task: Generate dialog" in text and FORMAT in text
    assert trained(tok, ex) == REPLY + "<|im_end|>" and text.endswith(TAIL)
    # Exactly the row with those turns left out, and no turn more than needed.
    layout = prompt_layout(row["messages"][1]["content"])
    for drop, fits in ((k, True), (k - 1, False)):
        prompt = without_turns(row["messages"][1]["content"], layout.turns, drop)
        shorter = tokenize_row(tok, row_of(prompt))
        assert (len(shorter) <= max_len) is fits
        if fits:
            assert shorter == ex


def test_turns_go_first_then_the_left_but_never_the_format(tok: Any) -> None:
    # Facts that are not conversation: even with 29 turns gone it is too long.
    facts = "# Facts\n" + " ".join(f"fact{i}" for i in range(300)) + "\n\n"
    row = row_of(agent_prompt(30, facts))
    prompt = row["messages"][1]["content"]
    newest_only = without_turns(prompt, prompt_layout(prompt).turns, 29)
    ex, cuts = fit_row(tok, row, len(tokenize_row(tok, row_of(newest_only))) - 100)
    assert ex is not None and cuts == Cuts(turns=29, truncated=True)
    text = tok.decode(ex.input_ids)
    assert SYSTEM not in text and "turn28 " not in text and "turn29 " in text
    assert text.endswith(FORMAT + TAIL)


def test_the_newest_turn_stays_when_long_instructions_follow_it(tok: Any) -> None:
    """elizaOS puts long action lists and rules between the conversation and the format: a
    cut from the left alone would keep them and lose the request the reply answers. What
    precedes the newest turn goes, then the instructions nearest the format."""
    rules = "".join(f"- rule{i} keeps thing {i} in mind\n" for i in range(120))
    row = row_of(agent_prompt(30).replace("rules[2]:\n", f"rules[122]:\n{rules}"))
    ex, cuts = fit_row(tok, row, 400)
    assert ex is not None and len(ex) <= 400 and cuts == Cuts(turns=29, truncated=True)
    text = tok.decode(ex.input_ids)
    assert "turn29 " in text and "turn28 " not in text and SYSTEM not in text
    assert "# Available Actions\nREPLY, IGNORE" in text  # right after the turn: kept
    assert "rule0 " in text and "rule119 " not in text  # cut from the format's side
    assert text.endswith(FORMAT + TAIL) and trained(tok, ex) == REPLY + "<|im_end|>"


def test_a_prompt_with_no_conversation_is_cut_from_the_left_but_keeps_its_format(
    tok: Any,
) -> None:
    words = " ".join(f"word{i}" for i in range(400))
    row = row_of(f"task: Summarise.\n\n{words}\n\n{FORMAT}")
    full = tokenize_row(tok, row)
    ex, cuts = fit_row(tok, row, 120)
    assert cuts == Cuts(turns=0, truncated=True)
    assert ex is not None and ex.input_ids == full.input_ids[-120:]  # as before: the left goes
    assert FORMAT in tok.decode(ex.input_ids)
    # Where the format instructions and the reply alone exceed the limit: dropped, where
    # the cut from the left used to take the instructions.
    kept = len(tok(FORMAT + TAIL, add_special_tokens=False)["input_ids"])
    assert fit(full, kept - 1)[0] is not None  # the old cut kept it, without its format
    assert fit_row(tok, row, kept - 1) == (None, Cuts())
    ex, _ = fit_row(tok, row, kept)
    assert ex is not None and tok.decode(ex.input_ids) == FORMAT + TAIL


def test_the_counts_reach_the_job_and_its_log(
    tiny_llama_dir: Path, tok: Any, tmp_path: Path
) -> None:
    long_row = row_of(agent_prompt(30))
    max_len = len(tokenize_row(tok, long_row)) - 150
    k = fit_row(tok, long_row, max_len)[1].turns
    words = " ".join(f"word{i}" for i in range(600))
    rows = [
        long_row,  # shortened: k turns
        row_of(f"{words}\n\n{FORMAT}"),  # no conversation: cut from the left
        row_of(agent_prompt(30), reply=words),  # the reply alone is too long: dropped
        row_of("# Conversation Messages\nalice: hi\nbob: hello\n\n" + FORMAT),  # fits
    ]
    data = write_dataset(tmp_path / "d", rows, rows[3:])
    kept, stats = tokenized_examples(data / "train.jsonl", tok, max_len)
    assert len(kept) == 3
    assert (stats.shortened, stats.dropped_turns, stats.truncated, stats.too_long) == (1, k, 1, 1)
    cb = RecordingCallback()
    spec = make_spec(tiny_llama_dir, data, tmp_path, max_seq_length=max_len)
    train_and_val_examples(spec, tok, cb)
    assert cb.summary == {
        "shortenedExamples": 1, "droppedTurns": k, "truncatedExamples": 1, "droppedExamples": 1,
    }  # fmt: skip
    assert (
        f"3 training and 1 validation examples, 1 shortened ({k} oldest conversation turns "
        "dropped), 1 truncated from the left, 1 dropped (reply and format instructions "
        "longer than maxSeqLength)"
    ) in cb.logs


# -- preference items (DPO, KTO) -----------------------------------------------------------------
#: A longer reply: the side of a pair that needs more room.
LONG_REPLY = REPLY.replace("it is red.", "it is red, " + " ".join(["like a ripe tomato"] * 15))


def pair_of(prompt: str, chosen: str, rejected: str) -> dict[str, Any]:
    return {
        "prompt": row_of(prompt)["messages"][:2],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def prompt_part(ex: Any) -> list[int]:
    """The tokens before the reply (a pair's prompts hold no assistant turn)."""
    return ex.input_ids[: ex.mask.index(True)]


@pytest.mark.parametrize("longer", ["chosen", "rejected"])
def test_a_long_dpo_pair_keeps_one_prompt_with_its_newest_turn_and_format(
    tok: Any, longer: str
) -> None:
    rules = "".join(f"- rule{i} keeps thing {i} in mind\n" for i in range(120))
    prompt = agent_prompt(30).replace("rules[2]:\n", f"rules[122]:\n{rules}")
    replies = {"chosen": REPLY, "rejected": REPLY}
    replies[longer] = LONG_REPLY
    row = pair_of(prompt, replies["chosen"], replies["rejected"])
    item, cuts = preference_item(tok, row, "dpo", 400)
    assert item is not None and item.label is None and cuts == Cuts(turns=29, truncated=True)
    chosen, rejected = item.examples
    assert prompt_part(chosen) == prompt_part(rejected)  # one prompt for both replies
    text = tok.decode(prompt_part(chosen))
    assert "turn29 " in text and "turn28 " not in text and SYSTEM not in text
    assert text.endswith(FORMAT + "<|im_end|>\n<|im_start|>assistant\n")
    for ex, side in ((chosen, "chosen"), (rejected, "rejected")):
        assert len(ex) <= 400 and trained(tok, ex) == replies[side] + "<|im_end|>"
    # The longer side is cut exactly as SFT cuts it; the shorter one, cut alone, would
    # have kept more of the prompt (a different prompt).
    short = "rejected" if longer == "chosen" else "chosen"
    sides = dict(zip(("chosen", "rejected"), item.examples, strict=True))
    alone = {k: fit_row(tok, row_of(prompt, replies[k]), 400)[0] for k in replies}
    assert sides[longer] == alone[longer]
    assert alone[short] is not None
    assert len(prompt_part(alone[short])) > len(prompt_part(sides[short]))


def test_a_dpo_pair_whose_reply_cannot_fit_is_dropped(tok: Any) -> None:
    words = " ".join(f"word{i}" for i in range(600))
    assert preference_item(tok, pair_of(agent_prompt(30), REPLY, words), "dpo", 300) == (
        None, Cuts(),
    )  # fmt: skip


def test_a_long_kto_row_is_cut_as_sft_cuts_it(tok: Any) -> None:
    row = {**row_of(agent_prompt(30)), "label": False}
    max_len = len(tokenize_row(tok, row)) - 150
    item, cuts = preference_item(tok, row, "kto", max_len)
    assert item is not None and item.label is False and 2 < cuts.turns < 29
    assert (item.examples[0], cuts) == fit_row(tok, row_of(agent_prompt(30)), max_len)
    text = tok.decode(item.examples[0].input_ids)
    assert "turn29 " in text and "turn0 " not in text and text.endswith(FORMAT + TAIL)


@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_preference_counts_reach_the_job_and_its_log(
    tiny_llama_dir: Path, tok: Any, tmp_path: Path, objective: str
) -> None:
    long_row = row_of(agent_prompt(30))
    max_len = len(tokenize_row(tok, long_row)) - 150
    k = fit_row(tok, long_row, max_len)[1].turns
    words = " ".join(f"word{i}" for i in range(600))
    prompts_replies = [
        (agent_prompt(30), REPLY),  # shortened: k turns
        (f"{words}\n\n{FORMAT}", REPLY),  # no conversation: cut from the left
        (agent_prompt(30), words),  # the reply alone is too long: dropped
        ("# Conversation Messages\nalice: hi\nbob: hello\n\n" + FORMAT, REPLY),  # fits
    ]
    if objective == "dpo":
        rows = [pair_of(p, REPLY, r) for p, r in prompts_replies]
    else:
        rows = [{**row_of(p, r), "label": True} for p, r in prompts_replies]
    data = write_dataset(tmp_path / "d", rows, rows[3:])
    cb = RecordingCallback()
    spec = make_spec(tiny_llama_dir, data, tmp_path, max_seq_length=max_len, objective=objective)
    train, valid = preference_items(spec, tok, cb)
    assert (len(train), len(valid)) == (3, 1)
    assert cb.summary == {
        "shortenedExamples": 1, "droppedTurns": k, "truncatedExamples": 1, "droppedExamples": 1,
    }  # fmt: skip
    assert (
        f"3 training and 1 validation {objective} items, 1 shortened ({k} oldest "
        "conversation turns dropped), 1 truncated from the left, 1 dropped (reply and format "
        "instructions longer than maxSeqLength)"
    ) in cb.logs
