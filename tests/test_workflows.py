"""The shipped workflows and the headless `edit` command: in sync, complete, and running end to end."""

import json
import tempfile
from pathlib import Path

import pytest
from comfy_harness import run_edit
from comfyui_diffferv.headless.plan import plan_run
from comfyui_diffferv.headless.workflow import CHECKPOINT_URL, FaceMaskSettings, prepare_prompt
from conftest import ROOT
from video_probe import probe
from workflow_graphs import GRAPHS, described, write_all

WORKFLOWS = ROOT / "workflows"
TINY = {"frames": 3, "size": 64, "steps": 2}


def test_committed_workflows_are_what_the_descriptions_generate(comfy):
    with tempfile.TemporaryDirectory() as folder:
        for path in write_all(comfy, Path(folder)):
            committed = WORKFLOWS / path.relative_to(folder)
            assert committed.is_file(), f"{committed} is missing: run tests/workflow_graphs.py"
            assert described(json.loads(committed.read_text())) == described(json.loads(path.read_text())), (
                f"{committed.relative_to(ROOT)} differs from its description: run tests/workflow_graphs.py"
            )
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == sorted(g.name for g in GRAPHS)


def test_api_workflows_validate_in_comfyui(comfy, input_clip, sd15_checkpoint):
    """ComfyUI's own validator accepts every shipped API workflow once its files exist."""
    import asyncio

    comfy.add_model_folder("checkpoints", sd15_checkpoint.parent)
    for path in sorted((WORKFLOWS / "api").glob("*.json")):
        prompt = prepare_prompt(
            json.loads(path.read_text()),
            video=input_clip,
            checkpoint=sd15_checkpoint.name,
            source="a photo of a woman",
            edit="a photo of a woman",
            **TINY,
        )
        valid = asyncio.run(comfy.execution.validate_prompt("check", prompt, None))
        assert valid[0], f"{path.name}: {valid[1]} {valid[3]}"
        assert {node["class_type"] for node in prompt.values()} >= {
            "DiffFERV_LoadVideo",
            "DiffFERV_ComputeFlowTrajectories",
            "DiffFERV_ApplyTemporalAttention",
            "DiffFERV_DDIMInvertWithCache",
            "DiffFERV_PreservationInjectSampler",
            "DiffFERV_VideoCombine",
        }


def test_prepare_prompt_sets_inputs_and_wires_a_specialized_unet():
    workflow = json.loads((WORKFLOWS / "api" / "diffferv_face_edit.json").read_text())
    prompt = prepare_prompt(
        workflow,
        video="v.mp4",
        checkpoint="c.safetensors",
        source="s",
        edit="e",
        tau_app=0.7,
        guidance=6.0,
        cache_mode="recompute",
        unet="face.safetensors",
        **TINY,
    )
    by_type = {node["class_type"]: (key, node) for key, node in prompt.items()}
    loader_id, loader = by_type["DiffFERV_LoadSpecializedUNet"]
    assert loader["inputs"] == {
        "unet_name": "face.safetensors",
        "model": [by_type["CheckpointLoaderSimple"][0], 0],
    }
    assert by_type["DiffFERV_ApplyTemporalAttention"][1]["inputs"]["model"] == [loader_id, 0]
    assert by_type["DiffFERV_PreservationInjectSampler"][1]["inputs"]["tau_app"] == 0.7
    assert by_type["DiffFERV_LoadVideo"][1]["inputs"]["max_frames"] == 3
    assert workflow != prompt and "DiffFERV_LoadSpecializedUNet" not in {
        n["class_type"] for n in workflow.values()
    }


def long_clip_prompt(**overrides) -> dict:
    settings = dict(
        video="talking_face_long.mp4",
        checkpoint="c.safetensors",
        source="s",
        edit="e",
        cache_mode="recompute",
        frames=0,
    )
    return prepare_prompt(
        json.loads((WORKFLOWS / "api" / "diffferv_long_clip.json").read_text()), **settings | overrides
    )


def test_the_edit_plan_of_the_long_clip():
    prompt = long_clip_prompt(window=16, overlap=4)
    plan, lines, _ = plan_run(prompt, WORKFLOWS / "media" / "talking_face_long.mp4", free_ram=2**40)
    assert plan.frames == 121 and len(plan.windows) == 10 and plan.largest_batch == 48
    assert plan.inversion_calls == 500 and plan.sampling_calls == 500
    text = "\n".join(lines)
    assert (
        "121 frames at 512x512, 50 + 50 DDIM steps, cache recompute: 386 MiB of inverted latents (store would need 603.4 GiB)"
        in text
    )
    assert "10 windows of up to 16 frames: 0-15, 12-27, 24-39, 36-51, ... (10 in all)" in text
    assert "largest UNet batch 48 frames" in text
    # auto: the store cache of 121 windowed 512 px frames fits in no RAM here
    auto, *_ = plan_run(
        long_clip_prompt(cache_mode="auto"), WORKFLOWS / "media" / "talking_face_long.mp4", 2**36
    )
    assert auto.sampling_chunks == 3
    small, lines, _ = plan_run(
        long_clip_prompt(cache_mode="auto", frames=8, size=64, steps=2),
        ROOT / "workflows" / "media" / "talking_face_long.mp4",
        2**36,
    )
    assert small.sampling_chunks == 2 and small.store_final_call and not small.windowed
    assert "one window (the whole clip in one batch)" in "\n".join(lines)
    later, lines, _ = plan_run(
        long_clip_prompt(frames=0, start=100), ROOT / "workflows" / "media" / "talking_face_long.mp4", 2**36
    )
    assert later.frames == 21 and "edit: 21 frames from frame 100 (4.00 s) at 512x512" in "\n".join(lines)


def test_prepare_prompt_sets_or_removes_the_context_windows():
    windowed = long_clip_prompt(window=8, overlap=2)
    (node,) = [n for n in windowed.values() if n["class_type"] == "DiffFERV_ContextWindows"]
    assert node["inputs"]["context_length"] == 8 and node["inputs"]["context_overlap"] == 2
    whole = long_clip_prompt(window=0)
    assert "DiffFERV_ContextWindows" not in {n["class_type"] for n in whole.values()}
    temporal = next(k for k, n in whole.items() if n["class_type"] == "DiffFERV_ApplyTemporalAttention")
    for kind in ("DiffFERV_DDIMInvertWithCache", "DiffFERV_PreservationInjectSampler"):
        assert next(n for n in whole.values() if n["class_type"] == kind)["inputs"]["model"] == [temporal, 0]


def test_prepare_prompt_confines_the_edit_to_a_face_mask():
    """--mask adds Face Mask on Load Video's frames and feeds its mask to the sampler; a workflow that
    has one (edit one face) gets its settings instead; the plan says what is masked."""
    mask = FaceMaskSettings("face+hair", face_index=1, pick="left-to-right", grow_px=4, feather_px=12)
    prompt = long_clip_prompt(frames=8, size=64, steps=2, face_mask=mask)
    by_type = {node["class_type"]: (key, node) for key, node in prompt.items()}
    mask_id, mask_node = by_type["DiffFERV_FaceMask"]
    assert mask_node["inputs"] == {
        "frames": [by_type["DiffFERV_LoadVideo"][0], 0],
        "region": "face+hair",
        "face_index": 1,
        "pick": "left-to-right",
        "grow_px": 4,
    }
    sampler = by_type["DiffFERV_PreservationInjectSampler"][1]["inputs"]
    assert sampler["mask"] == [mask_id, 0] and sampler["mask_feather_px"] == 12
    _, lines, _ = plan_run(prompt, WORKFLOWS / "media" / "talking_face_long.mp4", free_ram=2**36)
    assert lines[-1] == (
        "mask: the face+hair of face 1 (counted left-to-right), grown 4 px, edge feathered 12 px; outside it "
        "the clip stays as it is"
    )
    one_face = json.loads((WORKFLOWS / "api" / "diffferv_edit_one_face.json").read_text())
    shipped = next(key for key, node in one_face.items() if node["class_type"] == "DiffFERV_FaceMask")
    prompt = prepare_prompt(
        one_face, video="v.mp4", checkpoint="c.safetensors", source="s", edit="e", face_mask=mask, **TINY,
    )  # fmt: skip
    assert [key for key, node in prompt.items() if node["class_type"] == "DiffFERV_FaceMask"] == [shipped]
    assert prompt[shipped]["inputs"]["region"] == "face+hair"
    # speed mode: the mask is made on the keyframes, the frames the sampler edits
    speed = json.loads((WORKFLOWS / "api" / "diffferv_speed_mode.json").read_text())
    prompt = prepare_prompt(
        speed, video="v.mp4", checkpoint="c.safetensors", source="s", edit="e", face_mask=mask, keyframe_every=4,
        **TINY,
    )  # fmt: skip
    by_type = {node["class_type"]: (key, node) for key, node in prompt.items()}
    assert by_type["DiffFERV_FaceMask"][1]["inputs"]["frames"] == [by_type["DiffFERV_SelectKeyframes"][0], 0]


def test_edit_without_a_checkpoint_says_which_file_and_where():
    result = run_edit("--frames", "2", "--checkpoint", "/nonexistent/sd15.safetensors")
    assert result.returncode != 0
    assert CHECKPOINT_URL in result.stderr and "models/checkpoints" in result.stderr
    assert "--checkpoint: no file at /nonexistent/sd15.safetensors" in result.stderr


@pytest.mark.slow
def test_edit_command_edits_the_demo_clip(sd15_checkpoint, tmp_path):
    """The README's main job at a tiny size: the real SD1.5 architecture (random weights) through the
    shipped long-clip workflow, headless, in context windows of 2 frames; the plan first, then the
    progress as a line per stage and per tenth of the work (stdout is a pipe here)."""
    output, compare = tmp_path / "edit.gif", tmp_path / "compare.webm"  # the extension picks the format
    result = run_edit(
        "--checkpoint",
        str(sd15_checkpoint),
        "--frames",
        "3",
        "--size",
        "64",
        "--steps",
        "2",
        "--window",
        "2",
        "--overlap",
        "1",
        "--edit",
        "a photo of an old woman",
        "--output",
        str(output),
        "--compare",
        str(compare),
        "--report",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout.split("\n[", 1)[0]
    assert plan.startswith("plan:\n") and "3 frames at 64x64, 2 + 2 DDIM steps" in plan
    assert "2 windows of up to 2 frames: 0-1, 1-2" in plan
    assert "\n  GPU memory: about " in plan and "\n  GPU: " not in plan  # on the CPU: the need only
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    stages = ["load", "optical flow", "encode", "inversion", "sampling", "decode", "write", "report"]
    assert [s for s in stages if any(f"% {s}" in line for line in lines)] == stages
    assert lines[-1].endswith("100% done") and len(lines) <= len(stages) + 11
    assert any("ETA" in line for line in lines)
    assert probe(output).frames.shape == (3, 64, 64, 3)
    assert probe(compare).frames.shape == (3, 64, 128, 3)  # input | edit
    webm = b"\x1aE\xdf\xa3"  # EBML magic
    assert output.read_bytes()[:6] == b"GIF89a" and compare.read_bytes()[:4] == webm
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "compare.webm",
        "edit.gif",
        "edit.report.json",
    ]  # nothing partial left
    # --report: the Edit Report's text on stdout, its JSON beside the video
    report = json.loads((tmp_path / "edit.report.json").read_text())
    assert report["frames"] == 3 and (report["width"], report["height"]) == (64, 64)
    assert result.stdout.split("100% done\n", 1)[1].startswith(
        "Edit report: 3 frames, 64x64"
    )  # after the run
    assert f"PSNR {report['clip']['psnr_db']:.2f} dB" in result.stdout
    assert report["notes"]["flow"].endswith("from the trajectories")


@pytest.mark.slow
def test_edit_keyframe_every_runs_speed_mode_end_to_end(sd15_checkpoint, tmp_path):
    """`edit --keyframe-every 2` on 5 frames of the demo clip (the real SD1.5 architecture, random weights,
    64 px, 2 steps): the speed-mode workflow edits keyframes 0, 2 and 4 in context windows of 2 and
    propagates their edit to frames 1 and 3; the plan says so and the output has every frame."""
    output = tmp_path / "speed.mp4"
    result = run_edit(
        "--checkpoint", str(sd15_checkpoint), "--frames", "5", "--size", "64", "--steps", "2",
        "--window", "2", "--overlap", "1", "--keyframe-every", "2", "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout.split("\n[", 1)[0]
    assert "5 frames at 64x64, 2 + 2 DDIM steps" in plan
    assert (
        "speed mode: 3 keyframes (one every 2 frames, and the last) go through the UNet, the other 2" in plan
    )
    assert "2 windows of up to 2 frames: 0-1, 1-2" in plan  # windows over the 3 keyframes
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert any("% propagate" in line for line in lines) and lines[-1].endswith("100% done")
    assert probe(output).frames.shape == (5, 64, 64, 3)


@pytest.mark.slow
def test_edit_command_edits_one_face_of_two(sd15_checkpoint, tmp_path):
    """`edit --mask face` on the shipped two-face clip at a small size (the real SD1.5 architecture with
    random weights, so the pixels say nothing; tests/test_masked_edit.py checks the masked latents): the
    plan names the mask, Face Mask runs as its own stage, and the edit is written. (At 128 px only the left
    face is large enough for the detector; asking for a second one fails in Face Mask, said in flag terms:
    tests/test_edit_command_inputs.py.)"""
    output = tmp_path / "one_face.mp4"
    result = run_edit(
        "--checkpoint", str(sd15_checkpoint), "--video", str(WORKFLOWS / "media" / "two_faces.mp4"),
        "--frames", "3", "--size", "128", "--steps", "2", "--window", "2", "--overlap", "1",
        "--source", "a photo of two women", "--edit", "a photo of two old women",
        "--mask", "face", "--mask-pick", "left-to-right", "--mask-face", "0", "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout.split("\n[", 1)[0]
    assert "3 frames at 256x128" in plan
    assert "mask: the face of face 0 (counted left-to-right), grown 8 px, edge feathered 8 px" in plan
    assert any("% face mask" in line for line in result.stdout.splitlines())
    assert probe(output).frames.shape == (3, 128, 256, 3)
