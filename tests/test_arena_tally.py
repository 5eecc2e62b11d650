"""The Arena's tally, kept in the visitor's browser: one vote a round, and a store the browser
may hand back malformed."""

from __future__ import annotations

import pytest

from webui.arena import Round, new_tally, tally_markdown, valid_tally, vote


def test_one_vote_a_round() -> None:
    tally = new_tally()
    round_ = Round(["a/x", "b/y", "c/z"], voted=False)
    assert vote(tally, round_, 1)
    assert not vote(tally, round_, 0)  # already voted on this round
    assert vote(tally, Round(["a/x", "b/y"], voted=False), None)  # a tie
    assert not vote(tally, Round(["a/x"], voted=False), 5)  # no such column
    assert tally == {"wins": {"b/y": 1}, "ties": 1, "rounds": 2}
    table = tally_markdown(tally)
    assert "| `b/y` | 1 |" in table and "| *tie* | 1 |" in table and "2 rounds voted" in table


@pytest.mark.parametrize(
    "saved", [None, [], {"wins": {"a": "1"}, "ties": 0, "rounds": 0}, {"wins": {}, "ties": 0}]
)
def test_a_malformed_tally_starts_afresh(saved: object) -> None:
    assert valid_tally(saved) == new_tally()


def test_a_good_tally_is_kept() -> None:
    saved = {"wins": {"a": 2}, "ties": 1, "rounds": 3}
    assert valid_tally(saved) == saved
