"""lowprec.table.format_table: the one formatter behind every printed table."""

import pytest

from lowprec.table import format_table


def test_columns_align_left_or_right_under_a_rule():
    """Expected text written by hand (mutation tried: rjust for 'l' broke it)."""
    text = format_table(("name", "ms"), [("a", "1.5"), ("long", 12)], align="lr")
    assert text == ("name   ms\n"
                    "----  ---\n"
                    "a     1.5\n"
                    "long   12")


def test_bad_align_or_row_names_the_value():
    with pytest.raises(ValueError, match="'lx'"):
        format_table(("a", "b"), [], align="lx")
    with pytest.raises(ValueError, match="has 1 cells"):
        format_table(("a", "b"), [("only",)])
