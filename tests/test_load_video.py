"""LoadVideo (DiffFERV) inside a real ComfyUI: frame cap, skipping, sizing, other containers, errors."""

import shutil

import pytest
import torch
from comfy_harness import PromptError
from video_probe import probe

NODE = "DiffFERV_LoadVideo"


def load(comfy, video, **overrides):
    inputs = {"max_frames": 16, "skip_first_frames": 0, "every_nth": 1, "short_side": 512, "fit": "crop"}
    inputs.update(overrides)
    (images, fps, count, audio), _ = comfy.run_node(NODE, video=video, **inputs)
    return images, fps, count, audio


def test_cap_skip_and_thin_pick_the_right_frames(comfy, input_clip):
    source = probe(comfy.workdir / "input" / input_clip).frames
    images, fps, count, audio = load(
        comfy, input_clip, max_frames=5, skip_first_frames=3, every_nth=2, short_side=320
    )
    assert count == 5 and images.shape == (5, 320, 320, 3)
    assert fps == pytest.approx(12.5)
    assert audio is None  # the demo clip has no sound
    picked = torch.from_numpy(source[3:13:2]).float().permute(0, 3, 1, 2) / 255
    expected = torch.nn.functional.interpolate(picked, size=(320, 320), mode="bilinear", antialias=True)
    assert (images.permute(0, 3, 1, 2) - expected).abs().mean() < 0.01


@pytest.mark.parametrize("fit", ["crop", "stretch"])
@pytest.mark.parametrize("short_side", [256, 512])
def test_sides_are_multiples_of_64(comfy, tmp_path, fit, short_side):
    """A 16:9 clip (not square, not a multiple of 64) comes out at multiples of 64 either way."""
    frames = torch.rand(3, 90, 160, 3)
    (path, _), _ = comfy.run_node(
        "DiffFERV_VideoCombine",
        images=frames,
        fps=10.0,
        filename_prefix="wide",
        format="mp4 (h264)",
        quality=60,
        save_output=True,
    )
    name = "wide.mp4"
    shutil.copy(path, comfy.workdir / "input" / name)
    images, *_ = load(comfy, name, short_side=short_side, fit=fit)
    height, width = images.shape[1:3]
    assert height % 64 == 0 and width % 64 == 0
    assert height == short_side
    expected_width = round(160 * short_side / 90)
    if fit == "crop":
        assert expected_width - 64 < width <= expected_width
    else:
        assert abs(width - expected_width) <= 32


def test_all_frames_when_uncapped(comfy, input_clip):
    images, _, count, _ = load(comfy, input_clip, max_frames=0, short_side=64)
    assert count == 48 == images.shape[0]


def test_animated_webp_and_gif_inputs(comfy):
    frames = torch.rand(4, 64, 64, 3)
    for fmt in ("webp (animated)", "gif"):
        (path, _), _ = comfy.run_node(
            "DiffFERV_VideoCombine",
            images=frames,
            fps=20.0,
            filename_prefix="anim",
            format=fmt,
            quality=90,
            save_output=True,
        )
        name = "anim." + path.rsplit(".", 1)[1]
        shutil.copy(path, comfy.workdir / "input" / name)
        images, fps, count, _ = load(comfy, name, short_side=64)
        assert count == 4 and images.shape == (4, 64, 64, 3)
        assert fps == pytest.approx(20.0, rel=0.05)


def test_audio_comes_back_trimmed_to_the_kept_frames(comfy):
    rate = 22050
    t = torch.arange(rate * 2) / rate
    audio = {"waveform": (0.2 * torch.sin(2 * torch.pi * 330 * t)).view(1, 1, -1), "sample_rate": rate}
    (path, _), _ = comfy.run_node(
        "DiffFERV_VideoCombine",
        images=torch.rand(50, 64, 64, 3),
        fps=25.0,
        filename_prefix="talk",
        format="mp4 (h264)",
        quality=50,
        save_output=True,
        audio=audio,
    )
    shutil.copy(path, comfy.workdir / "input" / "talk.mp4")
    _, fps, count, loaded = load(
        comfy, "talk.mp4", max_frames=10, skip_first_frames=5, every_nth=2, short_side=64
    )
    assert count == 10 and fps == pytest.approx(12.5)
    seconds = loaded["waveform"].shape[-1] / loaded["sample_rate"]
    assert seconds == pytest.approx(10 * 2 / 25.0, abs=0.03)  # 20 source frames at 25 fps


def test_missing_file_and_overshooting_skip_are_clear_errors(comfy, input_clip):
    prompt = {
        "1": {
            "class_type": NODE,
            "inputs": {
                "video": "nope.mp4",
                "max_frames": 4,
                "skip_first_frames": 0,
                "every_nth": 1,
                "short_side": 64,
                "fit": "crop",
            },
        },
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    with pytest.raises(PromptError, match=r"nope\.mp4"):
        comfy.run_prompt(prompt)
    with pytest.raises(ValueError, match="skip_first_frames"):
        load(comfy, input_clip, skip_first_frames=500)
