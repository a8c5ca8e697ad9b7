"""Lines for an 80-column terminal: Chinese characters take two columns, long lines wrap at
spaces (or are cut with an ellipsis), and alert places are named as a person reads them."""

from __future__ import annotations

import io

from gateway.cli.alert_log import place_label
from gateway.cli.terminal import Console, columns, fit, wrap


def test_wide_characters_take_two_columns() -> None:
    assert columns("3号楼 2单元") == 11
    assert columns("abc") == 3


def test_fit_cuts_by_columns_and_marks_the_cut() -> None:
    assert fit("short", 10) == "short"
    cut = fit("1号楼 1单元 → 6 members, webhook emergency", 20)
    assert cut.endswith("…") and columns(cut) <= 20
    assert columns(fit("楼" * 50, 79)) <= 79  # never half a wide character over


def test_wrap_keeps_the_indent_and_every_word() -> None:
    text = "  points    23,326 distinct (a 4-frame meter reply is one point) and more words here"
    lines = wrap(text, 40)
    assert all(columns(line) <= 40 for line in lines)
    assert lines[0].startswith("  points") and lines[1].startswith("      ")
    assert " ".join(" ".join(lines).split()) == " ".join(text.split())


def test_a_console_off_a_terminal_prints_whole_lines() -> None:
    out = io.StringIO()
    console = Console(out, live=False)
    console.status("live line", print_it=False)
    console.say("an alert line")
    console.status("live line 2")
    assert out.getvalue() == "an alert line\nlive line 2\n"


def test_a_live_console_rewrites_its_status_below_permanent_lines() -> None:
    out = io.StringIO()
    console = Console(out, live=True)
    console.status("1 msgs")
    console.say("#1 I gas_leak raised")
    assert out.getvalue() == "\r\x1b[K1 msgs\r\x1b[K#1 I gas_leak raised\n1 msgs"


def test_places_are_named_below_the_grid_or_by_the_place_itself() -> None:
    names = ("幸福小区", "第一网格", "3号楼", "2单元", "1201")
    assert place_label(names, "xf/g01/b03/u2/1201") == "3号楼 2单元 1201"
    assert place_label(("幸福小区",), "xf") == "幸福小区"
    assert place_label(("幸福小区", "第一网格"), "xf/g01") == "第一网格"
    assert place_label((), "xf/g09") == "xf/g09"
