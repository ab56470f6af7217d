"""VideoCombine inside a real ComfyUI: formats, sizes, audio, the output folder, bad input."""

from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_harness import PromptError
from video_probe import probe, psnr

NODE = "DiffFERV_VideoCombine"


def combine(comfy, images, fmt="mp4 (h264)", prefix="tests/clip", fps=25.0, quality=65, **extra):
    (path, _), ui = comfy.run_node(
        NODE,
        images=images,
        fps=fps,
        filename_prefix=prefix,
        format=fmt,
        quality=quality,
        save_output=True,
        **extra,
    )
    return Path(path), ui


def gradient_frames(frames=6, height=64, width=96) -> torch.Tensor:
    """A moving colour gradient: smooth content that 4:2:0 codecs keep well, different in every frame."""
    y = torch.linspace(0, 1, height).view(1, height, 1)
    x = torch.linspace(0, 1, width).view(1, 1, width)
    t = torch.arange(frames).view(frames, 1, 1) / frames
    shape = (frames, height, width)
    return torch.stack([((x + t) / 2).expand(shape), y.expand(shape), ((x * y + t) / 2).expand(shape)], -1)


def test_core_loader_frames_round_trip(comfy, input_clip):
    """Core LoadVideo -> GetVideoComponents -> VideoCombine, as a workflow through ComfyUI's executor."""
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": input_clip}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {
            "class_type": NODE,
            "inputs": {
                "images": ["2", 0],
                "fps": ["2", 2],
                "filename_prefix": "tests/core",
                "format": "mp4 (h264)",
                "quality": 80,
                "save_output": True,
            },
        },
    }
    outputs = comfy.run_prompt(prompt)
    saved = outputs["3"]["images"][0]
    assert saved["type"] == "output" and saved["subfolder"] == "tests"
    written = probe(comfy.workdir / "output" / saved["subfolder"] / saved["filename"])
    source = probe(comfy.workdir / "input" / input_clip)
    assert written.frames.shape == source.frames.shape == (48, 350, 350, 3)
    assert written.fps == pytest.approx(25.0)
    assert psnr(written.frames, source.frames) > 35


@pytest.mark.parametrize(
    ("fmt", "suffix", "min_psnr"),
    [
        ("mp4 (h264)", ".mp4", 35),
        ("webm (vp9)", ".webm", 30),
        ("gif", ".gif", 20),
        ("webp (animated)", ".webp", 30),
        ("mkv (ffv1, lossless)", ".mkv", float("inf")),  # exact
    ],
)
def test_every_format_decodes_to_the_frames(comfy, fmt, suffix, min_psnr):
    frames = gradient_frames()
    path, ui = combine(comfy, frames, fmt=fmt, fps=12.0, quality=90)
    assert path.suffix == suffix and path.is_file()
    assert ui["images"][0]["filename"] == path.name and ui["animated"] == [True]
    back = probe(path)
    expected = (frames * 255).round().to(torch.uint8).numpy()
    assert back.frames.shape == expected.shape
    # gif stores delays in 1/100 s (12 fps -> 8 cs, 12.5 fps), webp in ms (83 ms, 12.05 fps)
    assert back.fps == pytest.approx(12.0, rel=0.05 if suffix in (".gif", ".webp") else 0.001)
    assert psnr(back.frames, expected) >= min_psnr


def test_odd_sizes_are_padded_for_yuv420_and_kept_for_gif(comfy):
    frames = gradient_frames(frames=3, height=33, width=47)
    mp4, _ = combine(comfy, frames)
    gif, _ = combine(comfy, frames, fmt="gif")
    back = probe(mp4)
    assert back.frames.shape == (3, 34, 48, 3)
    expected = (frames * 255).round().to(torch.uint8).numpy()
    assert psnr(back.frames[:, :33, :47], expected) > 30  # content untouched by the padding
    assert probe(gif).frames.shape == (3, 33, 47, 3)


def test_vhs_style_batch_with_alpha_and_grey(comfy):
    """VideoHelperSuite's loader gives float32 IMAGE batches; alpha and single-channel batches occur too."""
    rgba = torch.cat([gradient_frames(frames=2), torch.ones(2, 64, 96, 1)], dim=-1)
    grey = gradient_frames(frames=2)[..., :1]
    assert probe(combine(comfy, rgba)[0]).frames.shape == (2, 64, 96, 3)
    grey_back = probe(combine(comfy, grey)[0]).frames
    assert np.abs(grey_back[..., 0].astype(int) - grey_back[..., 2].astype(int)).max() <= 3


def test_audio_is_muxed_and_cut_to_the_video(comfy):
    rate = 44100
    t = torch.arange(rate * 3) / rate
    waveform = torch.stack([torch.sin(2 * torch.pi * 440 * t), torch.sin(2 * torch.pi * 660 * t)]) * 0.3
    frames = gradient_frames(frames=25)  # one second at 25 fps; the audio is three
    for fmt in ("mp4 (h264)", "webm (vp9)", "mkv (ffv1, lossless)"):
        path, _ = combine(
            comfy, frames, fmt=fmt, audio={"waveform": waveform.unsqueeze(0), "sample_rate": rate}
        )
        seconds = probe(path).audio_seconds
        assert seconds == pytest.approx(1.0, abs=0.05), fmt


AUDIO_FRAME = {"mp4 (h264)": 1024, "webm (vp9)": 960}
"""Samples per frame of each format's audio codec (AAC, Opus at 48 kHz)."""


@pytest.mark.parametrize("fmt", list(AUDIO_FRAME))
@pytest.mark.parametrize("rate", [44100, 48000])
def test_audio_plays_with_its_frames_to_the_sample(comfy, fmt, rate):
    """A beep from 0.2 s to 0.5 s under 1 s of video: decoded from the output as a player plays it (the
    encoder's priming skipped where the container says so), the beep starts at 0.2 s within 2 ms and the
    audio ends with the video within one audio frame (the codec's last frame is padded)."""
    from real_clips import onset
    from video_probe import audio_track

    t = torch.arange(rate * 2) / rate
    beep = ((t >= 0.2) & (t < 0.5)).float() * 0.5 * torch.sin(2 * torch.pi * 1000 * t)
    path, _ = combine(
        comfy, gradient_frames(frames=25), fmt=fmt, audio={"waveform": beep[None, None], "sample_rate": rate}
    )
    start, samples, played_rate = audio_track(path)
    began = start + onset(samples, played_rate)
    ended = start + samples.shape[1] / played_rate
    print(
        f"\n{fmt} at {rate} Hz: first sample {start:.4f} s, beep at {began:.4f} s (0.2), audio ends {ended:.4f} s (1.0)"
    )
    assert abs(start) < 1e-3 and began == pytest.approx(0.2, abs=0.002)
    assert 1.0 - 1e-3 <= ended <= 1.0 + AUDIO_FRAME[fmt] / played_rate


def test_runs_never_overwrite_each_other(comfy):
    first, _ = combine(comfy, gradient_frames(frames=2), prefix="tests/again")
    second, _ = combine(comfy, gradient_frames(frames=3), prefix="tests/again")
    assert first != second
    assert len(probe(first).frames) == 2 and len(probe(second).frames) == 3


def test_prefix_cannot_leave_the_output_folder(comfy):
    before = set((comfy.workdir).rglob("*"))
    with pytest.raises(Exception, match="outside the output folder"):
        combine(comfy, gradient_frames(frames=2), prefix="../../escaped")
    assert {p for p in comfy.workdir.parent.rglob("escaped*")} == set()
    assert set((comfy.workdir).rglob("*")) == before


def test_preview_only_goes_to_temp(comfy):
    (path, _), ui = comfy.run_node(
        NODE,
        images=gradient_frames(frames=2),
        fps=8.0,
        filename_prefix="preview",
        format="webp (animated)",
        quality=50,
        save_output=False,
    )
    assert Path(path).parent == comfy.workdir / "temp"
    assert ui["images"][0]["type"] == "temp"


def test_empty_batch_is_refused_with_a_clear_message(comfy):
    with pytest.raises(ValueError, match="no frames"):
        combine(comfy, torch.zeros(0, 64, 64, 3))


def test_empty_batch_in_a_workflow_reports_the_node(comfy, input_clip):
    """Through the executor the error comes back as ComfyUI's execution error, ComfyUI keeps running."""
    prompt = {
        "1": {
            "class_type": "DiffFERV_LoadVideo",
            "inputs": {
                "video": input_clip,
                "max_frames": 4,
                "skip_first_frames": 0,
                "every_nth": 1,
                "short_side": 64,
                "fit": "crop",
            },
        },
        "2": {"class_type": "ImageFromBatch", "inputs": {"image": ["1", 0], "batch_index": 0, "length": 1}},
        "3": {
            "class_type": NODE,
            "inputs": {
                "images": ["2", 0],
                "fps": 0.0,
                "filename_prefix": "x",
                "format": "gif",
                "quality": 50,
                "save_output": True,
            },
        },
    }
    with pytest.raises(PromptError, match="fps"):
        comfy.run_prompt(prompt)
