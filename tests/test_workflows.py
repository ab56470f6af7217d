"""The shipped workflows and the headless `edit` command: in sync, complete, and running end to end."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from comfyui_diffferv.headless.edit_command import CHECKPOINT_URL, prepare_prompt
from conftest import ROOT
from video_probe import probe
from workflow_graphs import GRAPHS, write_all

WORKFLOWS = ROOT / "workflows"
TINY = {"frames": 3, "size": 64, "steps": 2}


def test_committed_workflows_are_what_the_descriptions_generate(comfy):
    with tempfile.TemporaryDirectory() as folder:
        for path in write_all(comfy, Path(folder)):
            committed = WORKFLOWS / path.relative_to(folder)
            assert committed.is_file(), f"{committed} is missing: run tests/workflow_graphs.py"
            assert json.loads(committed.read_text()) == json.loads(path.read_text()), (
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
            tau_app=0.9,
            guidance=5.0,
            cache_mode="auto",
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


def run_edit(*arguments, cwd=ROOT):
    return subprocess.run(
        [sys.executable, str(ROOT), "edit", *arguments], capture_output=True, text=True, cwd=cwd
    )


def test_edit_without_a_checkpoint_says_which_file_and_where():
    result = run_edit("--frames", "2", "--checkpoint", "/nonexistent/sd15.safetensors")
    assert result.returncode != 0
    assert CHECKPOINT_URL in result.stderr and "models/checkpoints" in result.stderr
    assert "--checkpoint: no file at /nonexistent/sd15.safetensors" in result.stderr


@pytest.mark.slow
def test_edit_command_edits_the_demo_clip(sd15_checkpoint, tmp_path):
    """The README's main job at a tiny size: the real SD1.5 architecture (random weights) through the
    shipped workflow, headless."""
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
        "--edit",
        "a photo of an old woman",
        "--output",
        str(output),
        "--compare",
        str(compare),
        "--report",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Preservation Inject Sampler (DiffFERV): 2/2" in result.stderr  # progress per node
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
    assert result.stdout.startswith("Edit report: 3 frames, 64x64")
    assert f"PSNR {report['clip']['psnr_db']:.2f} dB" in result.stdout
    assert report["notes"]["flow"].endswith("from the trajectories")
