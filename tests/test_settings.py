"""Each setting is declared once (settings.Number / settings.Choice in the package of its concept): the
node that holds it and the `edit` flag that sets it must agree with the declaration on the default, the
range or choices, the widget step and the advice, and the flag's check must accept the range's ends and
refuse what lies beyond. The settings no flag sets are checked against their nodes, and the `specialize`
flags against the training's settings and check. A node or a flag that spells its own value fails here."""

from __future__ import annotations

import math

import pytest
from comfyui_diffferv.attention.swcfa import WINDOW
from comfyui_diffferv.flow.backends import BACKEND
from comfyui_diffferv.flow.consistency import CONSISTENCY_THRESHOLD
from comfyui_diffferv.flow.preview import PREVIEW_GRID
from comfyui_diffferv.headless.checks import value_problems
from comfyui_diffferv.headless.flags import DECLARED, default_of, parse, parser
from comfyui_diffferv.keyframes.propagation import BACKEND as PROPAGATION_BACKEND
from comfyui_diffferv.settings import Choice, Number, number_text
from comfyui_diffferv.specialize import flags as specialize
from comfyui_diffferv.specialize.inputs import CHECKED, CHOSEN, SAVE_LAYOUT, flag_of
from comfyui_diffferv.specialize.train import SettingsError, TrainSettings
from comfyui_diffferv.video.decode import EVERY_NTH, FIT, FRAME_RATE, SKIP_FIRST_FRAMES
from comfyui_diffferv.video.encode import FORMAT, FPS, QUALITY

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
    assert_widget(options, declared)
    assert declared.range in action.help


NODE_ONLY = [
    ("DiffFERV_LoadVideo", "skip_first_frames", SKIP_FIRST_FRAMES),
    ("DiffFERV_LoadVideo", "every_nth", EVERY_NTH),
    ("DiffFERV_LoadVideo", "fit", FIT),
    ("DiffFERV_LoadVideo", "frame_rate", FRAME_RATE),
    ("DiffFERV_ComputeFlowTrajectories", "backend", BACKEND),
    ("DiffFERV_ComputeFlowTrajectories", "consistency_threshold", CONSISTENCY_THRESHOLD),
    ("DiffFERV_ComputeFlowTrajectories", "preview_grid", PREVIEW_GRID),
    ("DiffFERV_PropagateKeyframeEdit", "backend", PROPAGATION_BACKEND),
    ("DiffFERV_PropagateKeyframeEdit", "consistency_threshold", CONSISTENCY_THRESHOLD),
    ("DiffFERV_ApplyTemporalAttention", "window", WINDOW),
    ("DiffFERV_VideoCombine", "fps", FPS),
    ("DiffFERV_VideoCombine", "format", FORMAT),
    ("DiffFERV_VideoCombine", "quality", QUALITY),
]
"""Declared settings that no `edit` flag sets, with the node inputs that hold them."""


@pytest.mark.parametrize("class_type, name, declared", NODE_ONLY, ids=[f"{c}.{n}" for c, n, _ in NODE_ONLY])
def test_a_node_input_without_a_flag_agrees_with_its_declaration(comfy, class_type, name, declared):
    kind, options = node_spec(comfy, class_type, name)
    assert options.get("default") == declared.default
    if declared.advice:
        assert declared.advice[0].upper() + declared.advice[1:] in options.get("tooltip", "")
    if isinstance(declared, Choice):
        assert tuple(kind if isinstance(kind, list) else options.get("options")) == declared.options
    else:
        assert_widget(options, declared)


def assert_widget(options: dict, declared: Number) -> None:
    """A node's number input has the declared range (from the "not used" value where there is one) and
    step."""
    low = declared.low if declared.off is None else declared.off
    assert (options.get("min"), options.get("max")) == (low, declared.high)
    if declared.step is not None:
        assert options.get("step") == declared.step


RANGED = sorted(f for f, s in DECLARED.items() if isinstance(s.declared, Number) and f != "--overlap")
"""The flags checked against their declared range (the overlap is checked against the window, below)."""


@pytest.mark.parametrize("flag", RANGED)
def test_the_flags_check_is_the_declared_range(flag):
    declared = DECLARED[flag].declared
    step = 1 if isinstance(declared.default, int) else 0.5
    tried = [(declared.low, True), (declared.high, True), (declared.high + step, False)]
    if declared.off is not None:  # the declaration's "not used" is accepted, the values up to its range not
        tried += [(declared.off, True), (declared.low - step, declared.low - step == declared.off)]
    for value, accepted in tried:
        said = [p for p in value_problems(parse([flag, number_text(value)])) if p.startswith(flag + " ")]
        assert (not said) == accepted, (flag, value, said)
        if not accepted:
            assert declared.range in said[0] and declared.advice in said[0]


def test_the_starts_check_is_the_declared_range_of_a_frame_or_a_time():
    """--start takes a frame (Load Video's skip_first_frames, SKIP_FIRST_FRAMES) or a time (START_SECONDS):
    each form's range ends are accepted, what lies beyond is refused saying the range."""
    from comfyui_diffferv.headless.cli import InputRefusedError
    from comfyui_diffferv.video.timing import START_SECONDS

    assert parse(["--start", str(SKIP_FIRST_FRAMES.high)]).start.frame == SKIP_FIRST_FRAMES.high
    assert parse(["--start", f"{number_text(START_SECONDS.high)}s"]).start.seconds == START_SECONDS.high
    assert parse([]).start.frame == SKIP_FIRST_FRAMES.default == 0
    for beyond, declared in (
        (str(SKIP_FIRST_FRAMES.high + 1), SKIP_FIRST_FRAMES),
        (f"{number_text(START_SECONDS.high + 1)}s", START_SECONDS),
    ):
        with pytest.raises(InputRefusedError, match=declared.range):
            parse(["--start", beyond])
    assert (
        START_SECONDS.range in ACTIONS["--start"].help and SKIP_FIRST_FRAMES.range in ACTIONS["--start"].help
    )


def test_the_overlap_is_checked_against_the_window():
    said = value_problems(parse(["--window", "8", "--overlap", "8"]))
    assert said == ["--overlap is 8; use 0 to 7 (less than --window 8)"]
    assert value_problems(parse(["--window", "8", "--overlap", "7"])) == []


SPECIALIZE = {
    action.option_strings[0]: action for action in specialize.parser()._actions if action.option_strings
}
TRAINING = {**CHECKED, **CHOSEN}


@pytest.mark.parametrize("field", sorted(TRAINING))
def test_specialize_flags_and_the_training_agree_with_the_declaration(field):
    """The `specialize` flag and the training's settings take the declared default; the flag's --help
    gives the range (or the choices) and the advice; the training's check accepts the range's ends and
    refuses what lies beyond, naming the flag."""
    declared, action = TRAINING[field], SPECIALIZE[flag_of(field)]
    assert action.default == declared.default == TrainSettings.__dataclass_fields__[field].default
    if declared.advice:
        assert declared.advice in action.help
    if isinstance(declared, Choice):
        assert tuple(action.choices) == declared.options
        TrainSettings(steps=1, **{field: declared.options[-1]}).check()
        with pytest.raises(SettingsError, match=f"^{flag_of(field)} is 'none'; choose one of"):
            TrainSettings(steps=1, **{field: "none"}).check()
        return
    assert declared.range in action.help
    step = 1 if isinstance(declared.default, int) else 0.5
    ends = [declared.low] + ([] if declared.high == math.inf else [declared.high])
    valid = {"micro_batch": 1} if field == "batch_size" else {}  # the batch is a multiple of the micro-batch
    for value in ends:
        TrainSettings(steps=1, **{**valid, field: value}).check()
    beyond = [declared.low - step] + ([] if declared.high == math.inf else [declared.high + step])
    for value in beyond:
        with pytest.raises(SettingsError, match=f"^{flag_of(field)} is {number_text(value)}; use"):
            TrainSettings(steps=1, **{field: value}).check()


def test_specialize_save_layout_is_the_declared_choice():
    action = SPECIALIZE["--save-layout"]
    assert (tuple(action.choices), action.default) == (SAVE_LAYOUT.options, SAVE_LAYOUT.default)
    assert SAVE_LAYOUT.advice in action.help
