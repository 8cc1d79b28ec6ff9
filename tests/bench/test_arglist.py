"""bench.harness.arglist: comma-separated numbers on the command line."""

from __future__ import annotations

import pytest

from bench.harness.arglist import numbers


def test_numbers_are_read_in_order_and_blanks_skipped() -> None:
    assert numbers("1,2, 4,", int, "--agents", 1) == [1, 2, 4]
    assert numbers("0.5,40", float, "--sleeps", 0.0) == [0.5, 40.0]


@pytest.mark.parametrize("text", ["", "x", "1,x", "0", "1,-3"])
def test_bad_lists_name_the_option_and_the_input(text: str) -> None:
    with pytest.raises(ValueError, match="--agents takes comma-separated positive integers, "
                                         "got") as caught:
        numbers(text, int, "--agents", 1)
    assert repr(text) in str(caught.value)


def test_floats_are_not_taken_where_integers_are_asked_for() -> None:
    with pytest.raises(ValueError, match="integers"):
        numbers("1.5", int, "--agents", 1)


def test_other_minimums_are_named() -> None:
    with pytest.raises(ValueError, match="integers of at least 2"):
        numbers("1", int, "--agents", 2)
    with pytest.raises(ValueError, match="non-negative numbers"):
        numbers("-0.5", float, "--sleeps", 0.0)
