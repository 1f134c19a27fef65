"""Rendering plans for people: untrusted names are shown as text, control characters as escapes."""

from __future__ import annotations

import io

from rich.console import Console

from wmap.pipeline import first_match
from wmap.planner import make_plan
from wmap.render import collapse, print_plan, visible
from wmap.transforms import rename


def test_control_characters_surrogates_and_bidi_overrides_are_shown_not_sent() -> None:
    assert visible("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert visible("\ud800x") == "\\ud800x"
    assert visible("\u202eevil") == "\\u202eevil"
    assert visible("encoder.layers.0.fc1 — ok") == "encoder.layers.0.fc1 — ok"


def test_a_hostile_key_prints_as_text() -> None:
    keys = {"[/x]": (1,), "[bold]k": (1,), "e\x1b[2J": (1,), "s\udcff": (1,), "a.w": (1,)}
    plan = make_plan(first_match("g", [rename("a", "t")]), keys, {"t.w": (1,)})
    out = io.StringIO()
    print_plan(plan, Console(file=out, width=200, color_system=None), title="[/title] \x1b]0;pwned\x07")
    text = out.getvalue()
    assert "[/x]" in text and "[bold]k" in text and "\\x1b[2J" in text and "\\udcff" in text
    assert "\x1b" not in text and "\x07" not in text and "[/title]" in text


def test_collapse_merges_layer_indices() -> None:
    rows = [(f"layers.{i}.fc.weight", f"blocks.{i}.fc.weight") for i in range(3)]
    assert collapse(rows) == [("layers.{0..2}.fc.weight", "blocks.{0..2}.fc.weight")]


def test_a_reverse_plan_shows_what_it_cannot_give_back() -> None:
    from wmap.planner import reverse_plan
    from wmap.reverse import reverse
    from wmap.transforms import PARAMS, skip

    rules = first_match("g", [rename("a", "t", PARAMS), skip("heads", "training heads; the target has none")])
    plan = reverse_plan(reverse(rules).unwrap(), {"t.weight": (1,)}, {"a.weight": (1,), "heads.weight": (2,)})
    out = io.StringIO()
    print_plan(plan, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "unrecoverable" in text and "heads.weight" in text and "training heads" in text
    assert "NOT clean" in text and "1 unrecoverable" in text
