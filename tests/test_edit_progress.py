"""The `edit` command's overall progress line (headless/progress.py), fed a run's events by hand: weights,
ETA, and what it prints to a log (a line per stage and per tenth) and to a terminal (one line redrawn)."""

import io

from comfyui_diffferv.headless.plan import STAGES as RUN_STAGES
from comfyui_diffferv.headless.plan import stages
from comfyui_diffferv.headless.progress import OverallProgress, Stage, format_duration
from comfyui_diffferv.windows.schedule import RunPlan, frame_evaluations, static_windows


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


STAGES = [
    Stage("load", frozenset({"Load"}), 10.0),
    Stage("inversion", frozenset({"Invert"}), 40.0),
    Stage("sampling", frozenset({"Sample"}), 50.0),
]
NODES = {"1": "Load", "2": "Invert", "3": "Sample", "4": "Checkpoint"}


def test_stages_without_a_node_in_the_workflow_are_left_out():
    absent = Stage("report", frozenset({"Report"}), 100.0)
    progress = OverallProgress([*STAGES, absent], NODES, io.StringIO(), Clock())
    assert [stage.name for stage in progress.stages] == ["load", "inversion", "sampling"]
    assert progress.total == 100.0


def run(progress: OverallProgress, clock: Clock, steps: int = 50) -> None:
    """load (no bar) 10 s, inversion `steps` steps 1 s each, sampling `steps` steps 1.25 s each."""
    progress.node_started("4")  # a node of no stage
    progress.node_started("1")
    clock.now += 10
    progress.node_started("2")
    for step in range(1, steps + 1):
        clock.now += 40 / steps
        progress.node_progress(step, steps, "2")
    progress.node_started("3")
    for step in range(1, steps + 1):
        clock.now += 50 / steps
        progress.node_progress(step, steps, "3")
    progress.finish()


def test_share_done_and_eta_follow_the_stage_weights():
    clock = Clock()
    progress = OverallProgress(STAGES, NODES, io.StringIO(), clock)
    assert progress.done() == 0 and progress.eta() is None
    progress.node_started("1")
    clock.now = 10
    progress.node_started("2")
    assert progress.done() == 0.1
    clock.now = 30
    progress.node_progress(25, 50, "2")
    assert progress.done() == 0.3
    assert abs(progress.eta() - 70.0) < 1e-9  # 30 s for 30 %: 70 s for the remaining 70 %


def test_a_log_gets_a_line_per_stage_and_per_tenth():
    clock = Clock()
    log = io.StringIO()
    run(OverallProgress(STAGES, NODES, log, clock), clock, steps=200)
    lines = log.getvalue().splitlines()
    assert lines[0] == "[         0 s]   0% load"
    assert lines[1] == "[        10 s]  10% inversion, ETA 1 min 30 s"
    assert lines[-1] == "[  1 min 40 s] 100% done"
    assert "[        20 s]  20% inversion 50/200, ETA 1 min 20 s" in lines
    assert lines[6] == "[        50 s]  50% sampling, ETA 50 s"
    tenths = [line for line in lines if "/200" in line]
    assert len(tenths) == 9 and len(lines) == 13  # 400 steps: 3 stage lines, 9 tenths, done


def test_a_terminal_gets_one_line_redrawn():
    clock = Clock()
    terminal = Terminal()
    run(OverallProgress(STAGES, NODES, terminal, clock), clock, steps=4)
    text = terminal.getvalue()
    assert text.count("\n") == 1 and text.endswith("100% done\n")
    assert text.count("\r\033[K") == 3 + 8 + 1  # every event redraws


def test_stages_of_a_windowed_plan_weigh_the_unet_work():
    plan = RunPlan(121, tuple(static_windows(121, 16, 4)), steps=50, sampling_chunks=3)
    work = {stage.name: stage.work for stage in stages(plan)}
    assert work["inversion"] == 160 * 50 and work["sampling"] == 160 * 50 * 3
    assert sum(work.values()) - work["inversion"] - work["sampling"] < 0.01 * work["sampling"]
    assert list(work) == [
        "load",
        "optical flow",
        "face mask",
        "encode",
        "inversion",
        "sampling",
        "decode",
        "propagate",
        "write",
        "report",
    ]


def test_stages_of_speed_mode_weigh_the_keyframes_unet_work_and_the_whole_clip_around_it():
    keyframes = RunPlan(31, tuple(static_windows(31, 16, 4)), steps=50, sampling_chunks=3)  # 121 frames, k 4
    speed = {stage.name: stage.work for stage in stages(keyframes, clip_frames=121)}
    full = RunPlan(121, tuple(static_windows(121, 16, 4)), steps=50, sampling_chunks=3)
    full = {stage.name: stage.work for stage in stages(full)}
    assert speed["sampling"] == frame_evaluations(list(keyframes.windows)) * 50 * 3 < full["sampling"] / 3
    per_frame = {name: work for name, work, _ in RUN_STAGES}
    assert speed["write"] == full["write"] and speed["propagate"] == per_frame["propagate"] * 121


def test_durations_read_well():
    assert [format_duration(s) for s in (4.4, 75, 3725)] == ["4 s", "1 min 15 s", "1 h 02 min"]
