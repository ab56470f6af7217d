"""Each setting is declared once (settings.Number / settings.Choice in the package of its concept): the
node that holds it and the `edit` flag that sets it must agree with the declaration on the default, the
range or choices, the widget step and the advice, and the flag's check must accept the range's ends and
refuse what lies beyond. A node or a flag that spells its own value fails here."""

from __future__ import annotations

import pytest
from comfyui_diffferv.headless.checks import value_problems
from comfyui_diffferv.headless.flags import DECLARED, default_of, parse, parser
from comfyui_diffferv.settings import Choice, Number, number_text

ACTIONS = {action.option_strings[0]: action for action in parser()._actions if action.option_strings}


def node_spec(comfy, class_type: str, name: str) -> tuple[object, dict]:
    """(kind, options) of a node input as ComfyUI reads it (INPUT_TYPES of the V3 schema)."""
    declared = comfy.node_class(class_type).INPUT_TYPES()
    spec = {**declared.get("optional", {}), **declared.get("required", {})}[name]
    return spec[0], spec[1] if len(spec) > 1 else {}


@pytest.mark.parametrize("flag", sorted(DECLARED))
def test_node_and_flag_agree_with_the_declaration(comfy, flag):
    setting = DECLARED[flag]
    declared = setting.declared
    kind, options = node_spec(comfy, setting.node, setting.input)
    assert options.get("default") == declared.default
    if declared.advice:
        advice = declared.advice[0].upper() + declared.advice[1:]
        assert advice in options.get("tooltip", ""), options.get("tooltip")
        assert declared.advice in ACTIONS[flag].help
    action = ACTIONS[flag]
    assert action.default == default_of(flag)
    assert action.default in (declared.default, setting.off)
    if isinstance(declared, Choice):
        node_choices = kind if isinstance(kind, list) else options.get("options")
        assert tuple(node_choices) == declared.options
        assert set(action.choices) - {setting.off} == set(declared.options)
        return
    assert isinstance(declared, Number)
    assert (options.get("min"), options.get("max")) == (declared.low, declared.high)
    if declared.step is not None:
        assert options.get("step") == declared.step
    assert declared.range in action.help


RANGED = sorted(f for f, s in DECLARED.items() if isinstance(s.declared, Number) and f != "--overlap")
"""The flags checked against their declared range (the overlap is checked against the window, below)."""


@pytest.mark.parametrize("flag", RANGED)
def test_the_flags_check_is_the_declared_range(flag):
    declared = DECLARED[flag].declared
    step = 1 if isinstance(declared.default, int) else 0.5
    for value, accepted in ((declared.low, True), (declared.high, True), (declared.high + step, False)):
        said = [p for p in value_problems(parse([flag, number_text(value)])) if p.startswith(flag + " ")]
        assert (not said) == accepted, (flag, value, said)
        if not accepted:
            assert declared.range in said[0] and declared.advice in said[0]


def test_the_overlap_is_checked_against_the_window():
    said = value_problems(parse(["--window", "8", "--overlap", "8"]))
    assert said == ["--overlap is 8; use 0 to 7 (less than --window 8)"]
    assert value_problems(parse(["--window", "8", "--overlap", "7"])) == []
