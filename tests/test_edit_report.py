"""Edit Report (DiffFERV) inside a real ComfyUI: wiring, outputs, the flow it measures with, progress,
interruption, errors, the UI without dlib; and its calibration on the demo clip."""

import json
import subprocess
import sys

import pytest
from calibration import blurred, other_face, reencoded, shuffled
from comfy_harness import load_video, load_video_inputs, progress_updates
from comfyui_diffferv.faces.dlib_models import INSTALL_COMMAND, SAME_PERSON_DISTANCE, face_models
from comfyui_diffferv.flow.backends import DISFlow
from comfyui_diffferv.flow.trajectories import compute_source_flow
from comfyui_diffferv.metrics.image_quality import PSNR_CAP_DB
from comfyui_diffferv.metrics.report import measure_edit
from comfyui_diffferv.video.decode import read_clip
from conftest import DEMO_CLIP, ROOT

NODE = "DiffFERV_EditReport"


def load(input_clip: str, frames: int, size: int) -> dict:
    return {
        "class_type": "DiffFERV_LoadVideo",
        "inputs": load_video_inputs(input_clip, frames, short_side=size),
    }


def demo_frames(comfy, input_clip, count, size):
    return load_video(comfy, input_clip, count, short_side=size)


def test_report_in_a_workflow_measures_with_the_trajectories_flow(comfy, input_clip):
    """Load Video -> Compute Flow Trajectories -> Edit Report of a blurred copy (core Image Blur), run by
    ComfyUI's executor: the UI gets the plot, the text and the JSON."""
    prompt = {
        "1": load(input_clip, 6, 256),
        "2": {
            "class_type": "DiffFERV_ComputeFlowTrajectories",
            "inputs": {
                "frames": ["1", 0],
                "backend": "dis",
                "consistency_threshold": 1.0,
                "flow_model": "none",
                "preview_grid": "1/16",
            },
        },
        "3": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 1.5}},
        "4": {
            "class_type": NODE,
            "inputs": {"source": ["1", 0], "edited": ["3", 0], "trajectories": ["2", 0], "identity": True},
        },
    }
    shown = comfy.run_prompt(prompt)["4"]
    report = json.loads(shown["report"][0])
    assert report["frames"] == 6 and (report["width"], report["height"]) == (256, 256)
    assert report["notes"]["flow"] == "dis flow of the source, 1 px check, from the trajectories"
    clip = report["clip"]
    assert 25 < clip["psnr_db"] < 60 and 0.5 < clip["ssim"] < 1.0
    assert clip["warping_error"]["output"] < clip["warping_error"]["source"]  # blur smooths changes away
    assert clip["identity"]["face_found"] == {"output": 1.0, "source": 1.0}
    assert clip["identity"]["source_to_output"] < SAME_PERSON_DISTANCE
    text = shown["text"][0]
    assert text.startswith("Edit report: 6 frames, 256x256") and f"PSNR {clip['psnr_db']:.2f} dB" in text
    assert "TL-ID" in text and "TG-ID" in text
    (image,) = shown["images"]
    assert image["type"] == "temp" and comfy.output_path(image).is_file()


def test_outputs_progress_and_interruption(comfy, input_clip):
    from comfy import model_management

    frames = demo_frames(comfy, input_clip, 4, 128)
    with progress_updates() as seen:
        (plot, payload), ui = comfy.run_node(NODE, source=frames, edited=frames.flip(0), identity=False)
    # 1 step of image quality, 3 flow pairs (no trajectories: computed here), 3 warping pairs
    assert seen == [(step, 7) for step in range(1, 8)]
    assert plot.ndim == 4 and plot.shape[0] == 1 and plot.shape[-1] == 3 and 0 <= float(plot.min()) <= 1
    report = json.loads(payload)
    assert list(ui["report"]) == [payload] and report["notes"]["flow"].endswith("computed from the source")
    assert report["clip"]["identity"] is None and "switched off" in ui["text"][0]

    model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(model_management.InterruptProcessingException):
            comfy.run_node(NODE, source=frames, edited=frames, identity=False)
    finally:
        model_management.interrupt_current_processing(False)


def test_refuses_trajectories_of_other_frames_and_clips_that_differ(comfy, input_clip):
    frames = demo_frames(comfy, input_clip, 4, 128)
    (trajectories, _), _ = comfy.run_node(
        "DiffFERV_ComputeFlowTrajectories",
        frames=frames[:3],
        backend="dis",
        consistency_threshold=1.0,
        preview_grid="1/16",
    )
    with pytest.raises(ValueError, match="connect the trajectories of these source frames"):
        comfy.run_node(NODE, source=frames, edited=frames, trajectories=trajectories, identity=False)
    with pytest.raises(ValueError, match="source has 4 frames, output 3"):
        comfy.run_node(NODE, source=frames, edited=frames[:3], identity=False)


def test_without_dlib_the_node_reports_the_rest_and_how_to_install_it(tmp_path):
    """ComfyUI started in a Python where `import dlib` fails: the node runs, and its text says how to
    install the face models."""
    script = f"""
import json, sys, torch
sys.modules["dlib"] = None  # as where dlib is not installed: import raises ImportError
sys.path.insert(0, {str(ROOT / "tests")!r})
import conftest
from comfy_harness import InProcessComfy
comfy = InProcessComfy(__import__("pathlib").Path({str(tmp_path)!r}))
frames = torch.rand(3, 64, 64, 3)
(plot, payload), ui = comfy.run_node("{NODE}", source=frames, edited=frames, identity=True)
print(json.dumps({{"text": ui["text"][0], "report": json.loads(payload), "images": len(ui["images"])}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert "Identity: not measured." in shown["text"] and INSTALL_COMMAND in shown["text"]
    assert shown["report"]["clip"]["identity"] is None and shown["report"]["clip"]["psnr_db"] == PSNR_CAP_DB
    assert INSTALL_COMMAND in shown["report"]["notes"]["identity"] and shown["images"] == 1


# -------------------------------------------------------------------------------------------- calibration


@pytest.mark.slow
def test_calibration_on_the_demo_clip():
    """The demo clip (48 frames, 350x350) against itself, an mp4 re-encode, a blurred copy, its frames
    shuffled and a copy with another person's face: the numbers fall in the order they must."""
    source = read_clip(DEMO_CLIP, 0).frames
    models = face_models()
    flow = compute_source_flow(source, DISFlow())
    copies = {
        "itself": source,
        "mp4 re-encode": reencoded(source),
        "blurred (sigma 2 px)": blurred(source),
        "shuffled frames": shuffled(source),
        "another face": other_face(source, models),
    }
    clips = {name: measure_edit(source, copy, flow, models).clip() for name, copy in copies.items()}
    print(
        "\n| copy | PSNR dB | SSIM | warping error output / source | identity source->output | "
        "TL-ID output / source | TG-ID output / source | faces found |"
    )
    for name, c in clips.items():
        w, i = c["warping_error"], c["identity"]
        print(
            f"| {name} | {c['psnr_db']:.2f} | {c['ssim']:.4f} | {w['output']:.2f} / {w['source']:.2f} | "
            f"{i['source_to_output']:.3f} | {i['tl_id']['output']:.3f} / {i['tl_id']['source']:.3f} | "
            f"{i['tg_id']['output']:.3f} / {i['tg_id']['source']:.3f} | {i['face_found']['output']:.0%} |"
        )
    itself, mp4, blur, shuffle, other = clips.values()
    # the clip against itself: perfect, and the output's temporal numbers are the source's own
    assert itself["psnr_db"] == PSNR_CAP_DB and itself["ssim"] == 1.0
    assert itself["warping_error"]["output"] == itself["warping_error"]["source"]
    assert itself["identity"]["source_to_output"] == 0.0
    assert itself["identity"]["tl_id"]["output"] == itself["identity"]["tl_id"]["source"]
    # fidelity falls from the re-encode to the blur to the shuffle
    assert PSNR_CAP_DB > mp4["psnr_db"] > blur["psnr_db"] > shuffle["psnr_db"]
    assert 1.0 > mp4["ssim"] > blur["ssim"] > shuffle["ssim"]
    # a re-encode or a blur changes no motion; shuffled frames make the warping error jump
    source_warp = itself["warping_error"]["source"]
    assert (
        mp4["warping_error"]["output"] < 1.5 * source_warp and blur["warping_error"]["output"] < source_warp
    )
    assert shuffle["warping_error"]["output"] > 4 * source_warp
    assert shuffle["identity"]["tl_id"]["output"] > 1.5 * itself["identity"]["tl_id"]["source"]
    # the same person stays the same person; another face is another person, and farther than any
    same_face = [c["identity"]["source_to_output"] for c in (itself, mp4, blur)]
    assert itself["identity"]["source_to_output"] < mp4["identity"]["source_to_output"] < SAME_PERSON_DISTANCE
    assert blur["identity"]["source_to_output"] < SAME_PERSON_DISTANCE
    assert other["identity"]["source_to_output"] > max(SAME_PERSON_DISTANCE, 2 * max(same_face))
    assert all(c["identity"]["face_found"] == {"output": 1.0, "source": 1.0} for c in clips.values())
