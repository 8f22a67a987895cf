"""Handle pseudonyms (``anonymizeHandles``): the people in elizaOS conversations become
``user_<hex>``, consistently within a dataset and across datasets of one home, other
pseudonyms under another key; the agent's own name and prompt headings stay."""

from __future__ import annotations

import re
from pathlib import Path

from milady_lab.datasets import build as ds
from milady_lab.privacy import PrivacyOptions

from .test_build import Home, planted  # noqa: F401  (fixture)

_PSEUDONYM = re.compile(r"user_[0-9a-f]{8}")


def _handles_build(home: Home, key: bytes | None = None) -> dict:
    opts = ds.BuildOptions(privacy=PrivacyOptions(anonymize_handles=True, handle_key=key))
    return ds.build_dataset(home.source, home.settings, home.store, opts)


def test_people_become_consistent_pseudonyms_agent_and_headings_stay(planted) -> None:  # noqa: F811
    home, _e, _s = planted
    rec = _handles_build(home)
    text = home.texts(rec)
    assert not re.search(r"\b(kai|remi)\b", text, re.IGNORECASE)
    names = set(_PSEUDONYM.findall(text))
    assert len(names) == 2  # kai and remi, one pseudonym each across every example
    for line in text.split("\n")[:-1]:
        # "kai: gm milady" and "@kai" and "reply to kai" all carry the same pseudonym.
        said = re.search(r"(user_[0-9a-f]{8}): gm milady", line)
        mention = re.search(r"(user_[0-9a-f]{8}): @(user_[0-9a-f]{8}) did you see", line)
        task = re.search(r"next reply to (user_[0-9a-f]{8})", line)
        assert said and mention and task, line[:300]
        # remi mentions kai: two people, kai the same in all three places.
        assert said.group(1) == task.group(1) == mention.group(2) != mention.group(1)
    assert "Milady: soft and slow" in text and "You are Milady" in text
    assert "Time: 2026-01-" in text and "# Task" in text
    assert rec["options"]["privacy"] == {"redact": True, "anonymizeHandles": True}


def test_same_pseudonyms_in_a_second_dataset_other_ones_under_another_key(planted) -> None:  # noqa: F811
    home, _e, _s = planted
    first = set(_PSEUDONYM.findall(home.texts(_handles_build(home))))
    second = set(_PSEUDONYM.findall(home.texts(_handles_build(home))))
    other = set(_PSEUDONYM.findall(home.texts(_handles_build(home, key=b"another dataset"))))
    assert first == second and len(first) == 2
    assert other.isdisjoint(first) and len(other) == 2
    key = (home.settings.home / "privacy.key").read_bytes()
    assert len(key) == 32 and (home.settings.home / "privacy.key").stat().st_mode & 0o077 == 0


def test_handles_are_kept_unless_asked(planted) -> None:  # noqa: F811
    home, _e, _s = planted
    text = home.texts(home.build())
    assert "kai: gm milady" in text and "@remi" not in text and "@kai did you see" in text
    assert not _PSEUDONYM.search(text)


def test_pseudonyms_never_carry_the_name(tmp_path: Path) -> None:
    from milady_lab.privacy.handles import Pseudonyms

    p = Pseudonyms(b"k")
    assert p.pseudonym("kai") == p.pseudonym("KAI") != p.pseudonym("remi")
    assert "kai" not in p.pseudonym("kai")
