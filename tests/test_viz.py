"""Small display helpers of viz.py (the figures are exercised by the notebook and pipeline runs)."""
from videonarrator import viz


def test_markdown_table_rounds_numbers_and_blanks_none():
    table = viz.markdown_table([{"name": "a", "x": 1.23456, "y": None}, {"name": "b", "x": 2, "y": "z"}])
    assert table.splitlines() == ["| name | x | y |", "|---|---|---|", "| a | 1.23 |  |", "| b | 2 | z |"]
    assert viz.markdown_table([]) == ""
