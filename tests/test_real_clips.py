"""Clips as phones and the internet make them, through Load Video (DiffFERV) in a real ComfyUI: a display
matrix turns frames upright, a variable frame rate is taken at a constant one by timestamps (duration and
audio kept), a damaged file is refused at validation saying where and what to do, ComfyUI's VIDEO type in
and out. The clips are made here, tiny (tests/real_clips.py)."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import DEMO_CLIP
from real_clips import damage, display_matrix, onset, pattern, shown, tone, write_clip, write_hdr_clip
from video_probe import probe, psnr

NODE = "DiffFERV_LoadVideo"
LOAD = {"max_frames": 0, "skip_first_frames": 0, "every_nth": 1, "short_side": 64, "fit": "crop"}


def into_input(comfy, path: Path) -> str:
    shutil.copy(path, comfy.workdir / "input" / path.name)
    return path.name


def load(comfy, video: str, **overrides):
    (images, fps, count, audio), _ = comfy.run_node(NODE, video=video, **{**LOAD, **overrides})
    return images, fps, count, audio


def uint8(images: torch.Tensor) -> np.ndarray:
    return (images * 255).round().to(torch.uint8).numpy()


ORIENTATIONS = [(90, False), (180, False), (270, False), (0, True), (90, True), (180, True), (270, True)]


@pytest.mark.parametrize(("degrees", "mirrored"), ORIENTATIONS)
def test_a_display_matrix_turns_the_frames_upright(comfy, tmp_path, caplog, degrees, mirrored):
    """Coded 128x64 frames with a display matrix come out as a player shows them (numpy's turn of the
    decoded coded frames), not as coded; the node says it turned them."""
    coded = pattern(2, 64, 128)
    name = f"phone_{degrees}_{int(mirrored)}.mp4"
    path = write_clip(tmp_path / name, coded, matrix=display_matrix(degrees, mirrored))
    if not mirrored:  # FFmpeg's own reading of the matrix: counter-clockwise degrees
        with av.open(str(path)) as container:
            assert round(next(container.decode(video=0)).rotation) % 360 == degrees
    expected = shown(probe(path).frames, degrees, mirrored)  # the decoded coded frames, turned by numpy
    with caplog.at_level("INFO"):
        images, _, count, _ = load(comfy, into_input(comfy, path), short_side=64)
    got = uint8(images)
    assert got.shape == expected.shape and count == 2
    assert psnr(got, expected) > 40
    unturned = probe(path).frames
    if unturned.shape == got.shape:
        assert psnr(got, unturned) < 25  # the pattern shows any turn
    said = [r.getMessage() for r in caplog.records if "Load Video (DiffFERV)" in r.getMessage()]
    assert said and "by its display matrix: frames turned upright" in said[0]
    assert ("mirrored" in said[0]) == mirrored and (f"turned {(-degrees) % 360}" in said[0]) == bool(
        degrees % 360
    )


def test_a_phone_clip_is_portrait_at_validation_and_in_the_probe(comfy, tmp_path):
    """A phone's portrait clip (coded 350x256 landscape, turned 90 degrees clockwise) is 256x350: the
    working size is the upright one."""
    from comfyui_diffferv.video.decode import probe_clip

    path = write_clip(tmp_path / "portrait.mp4", pattern(3, 256, 350), matrix=display_matrix(-90))
    info = probe_clip(path, count_up_to=100)
    assert (info.width, info.height, info.frames) == (256, 350, 3)
    assert info.describe() == "3 frames of 256x350 (shown turned 90 degrees clockwise: coded 350x256)"
    images, *_ = load(comfy, into_input(comfy, path), short_side=256)
    assert images.shape == (3, 320, 256, 3)


VFR_TIMES = [0.04 * i for i in range(24)] + [0.96 + 0.1 * i for i in range(24)]
VFR_END = 0.96 + 2.4  # 48 frames over 3.36 s: 14.29 fps on average
FLASH = 30  # the frame shown from 1.56 s, white, when the tone starts


def vfr_clip(tmp_path: Path) -> Path:
    frames = np.full((48, 64, 64, 3), 40, np.uint8)
    frames[FLASH] = 255
    return write_clip(tmp_path / "vfr.mp4", frames, VFR_TIMES, VFR_END, audio=tone(VFR_END, VFR_TIMES[FLASH]))


def flash_and_tone(path: Path) -> tuple[float, float, float, float]:
    """(duration, time of the white frame, tone onset, frame interval) of a written clip, by PyAV."""
    written = probe(path)
    index = int(np.flatnonzero(written.frames.reshape(len(written.frames), -1).mean(axis=1) > 200)[0])
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
        sound_onset = onset(samples, stream.codec_context.sample_rate)
    return len(written.frames) / written.fps, index / written.fps, sound_onset, 1 / written.fps


def test_a_variable_rate_clip_keeps_its_duration_and_its_sound_in_sync(comfy, tmp_path, caplog):
    """Frames 0.04 s apart, then 0.1 s (48 over 3.36 s), a tone starting with a white frame at 1.56 s.
    Load Video -> Video Combine writes 3.36 s at the clip's average rate and the white frame within a
    frame of the tone; the node says the clip was variable-rate and the rate it took."""
    name = into_input(comfy, vfr_clip(tmp_path))
    prompt = {
        "1": {"class_type": NODE, "inputs": {"video": name, **LOAD}},
        "2": {
            "class_type": "DiffFERV_VideoCombine",
            "inputs": {
                "images": ["1", 0], "fps": ["1", 1], "audio": ["1", 3], "filename_prefix": "tests/vfr",
                "format": "mp4 (h264)", "quality": 60, "save_output": True,
            },
        },
    }  # fmt: skip
    with caplog.at_level("INFO"):
        outputs = comfy.run_prompt(prompt)
    saved = outputs["2"]["images"][0]
    duration, flash, sound, frame = flash_and_tone(
        comfy.workdir / "output" / saved["subfolder"] / saved["filename"]
    )
    assert duration == pytest.approx(VFR_END, abs=frame)
    assert frame == pytest.approx(VFR_END / 48, rel=0.01)  # the average rate
    assert abs(flash - VFR_TIMES[FLASH]) <= frame and abs(sound - flash) <= frame
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "variable frame rate: taken at a constant 14.29 fps by the frames' timestamps" in said


def test_a_chosen_rate_takes_frames_by_their_timestamps(comfy, tmp_path):
    """frame_rate 10 on the variable-rate clip: 34 frames (3.36 s), each the one shown at its middle."""
    images, fps, count, audio = load(comfy, into_input(comfy, vfr_clip(tmp_path)), frame_rate=10.0)
    assert fps == 10.0 and count == 34
    white = int(np.flatnonzero(uint8(images).reshape(count, -1).mean(axis=1) > 200)[0])
    assert (
        white == 16
    )  # slot 15's middle (1.55 s) is before the white frame (1.56 s), slot 16's (1.65 s) in it
    assert audio["waveform"].shape[-1] / audio["sample_rate"] == pytest.approx(VFR_END, abs=0.05)


@pytest.fixture(scope="module")
def damaged_clip(comfy, tmp_path_factory) -> str:
    """48 frames of noise-like content (so the damage lands in the frames' data), bytes 30%..70% random."""
    rng = np.random.default_rng(3)
    frames = (pattern(48, 64, 64).astype(np.int16) + rng.integers(-60, 60, (48, 64, 64, 3))).clip(0, 255)
    path = write_clip(tmp_path_factory.mktemp("damaged") / "damaged.mp4", frames.astype(np.uint8))
    return into_input(comfy, damage(path))


def load_prompt(video: str, **overrides) -> dict:
    return {
        "1": {"class_type": NODE, "inputs": {"video": video, **LOAD, **overrides}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }


def test_a_damaged_clip_is_refused_at_validation_saying_where(comfy, damaged_clip):
    problems, _ = comfy.validate(load_prompt(damaged_clip))
    assert len(problems) == 1 and problems[0].input_name == "video"
    sentence = problems[0].message
    frame = int(sentence.split("decoding stops at frame ")[1].split(" ")[0])
    assert 0 < frame < 40
    assert sentence.startswith(
        f"video: damaged.mp4 is damaged: decoding stops at frame {frame} ({frame / 25:.2f} s) of 48 ("
    )
    assert sentence.endswith(
        f"); keep the {frame} frames before it with max_frames {frame}, or re-encode the file (e.g. ffmpeg -i "
        "damaged.mp4 -c:v libx264 -crf 18 fixed.mp4) to edit all of it"
    )
    # what it says works: those frames load
    _, _, count, _ = load(comfy, damaged_clip, max_frames=frame)
    assert count == frame and comfy.validate(load_prompt(damaged_clip, max_frames=frame))[0] == []
    # and the advice counts kept frames when frames are skipped
    problems, _ = comfy.validate(load_prompt(damaged_clip, skip_first_frames=1, every_nth=2))
    assert f"with max_frames {frame // 2}," in problems[0].message


def test_a_clip_damaged_after_the_frames_asked_for_runs(comfy, damaged_clip):
    assert comfy.validate(load_prompt(damaged_clip, max_frames=4))[0] == []
    images, _, count, _ = load(comfy, damaged_clip, max_frames=4)
    assert count == 4 and images.shape == (4, 64, 64, 3)


def test_reading_past_the_damage_says_where(comfy, damaged_clip):
    """Without the check (the node run directly), decoding fails with the same sentence."""
    with pytest.raises(Exception, match=r"damaged.mp4 is damaged: decoding stops at frame \d+ "):
        load(comfy, damaged_clip)


# ------------------------------------------------------------------------------------------------------
# HDR and non-square pixels

HDR_CASES = [("PQ", "libx265", "mp4"), ("HLG", "libx265", "mp4"), ("PQ", "libsvtav1", "webm")]
"""HEVC as phones write it, and AV1 in WebM as the web does (this PyAV's libvpx has no 10-bit VP9
encoder; the path from decoded 10-bit frames on is the codec's tags, the same for VP9 profile 2)."""
HDR_LEVELS = 4.0
"""How far (8-bit levels) the mean of each channel may be from the SDR master's (measured: 2.5 at most)."""
HDR_SATURATION = 0.05
"""How far (a fraction) the mean saturation may be from the SDR master's (measured: 2.9% at most)."""


def colour_stats(frames: np.ndarray) -> tuple[np.ndarray, float]:
    """(mean R, G, B in 8-bit levels, mean HSV saturation in 0..255) of uint8 frames [..., 3]."""
    pixels = frames.reshape(-1, 3).astype(np.float64)
    top, bottom = pixels.max(axis=1), pixels.min(axis=1)
    saturation = np.where(top > 0, (top - bottom) / np.maximum(top, 1), 0.0) * 255
    return pixels.mean(axis=0), float(saturation.mean())


@pytest.mark.parametrize("transfer, codec, suffix", HDR_CASES, ids=[f"{t}-{c}" for t, c, _ in HDR_CASES])
def test_an_hdr_clip_reaches_the_model_in_its_sdr_masters_colours(
    comfy, tmp_path, caplog, transfer, codec, suffix
):
    """A 10-bit HDR clip (PQ with its MaxCLL and mastering display, or HLG; BT.2020) made from the demo
    clip's frames the way BT.2408 carries SDR in HDR: Load Video gives the model frames whose colour
    statistics are those of the SDR master, the probe (the edit's plan) says what was done, and the node
    says it in ComfyUI's log. FFmpeg's plain 8-bit conversion of the same clip is far off."""
    from comfyui_diffferv.video.decode import probe_clip

    master = probe(DEMO_CLIP).frames[:4, :128, 100:228]
    path = write_hdr_clip(tmp_path / f"hdr_{transfer}.{suffix}", master, transfer, codec)
    name = into_input(comfy, path)
    with caplog.at_level("INFO"):
        (images, *_), _ = comfy.run_node(NODE, video=name, **{**LOAD, "short_side": 128})
    with av.open(str(path)) as container:
        plain = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    rows = {
        name: colour_stats(frames)
        for name, frames in (("master", master), ("edit input", uint8(images)), ("plain", plain))
    }
    for what, (means, saturation) in rows.items():
        print(f"\n{transfer} {codec} {what}: mean RGB {means.round(1)}, saturation {saturation:.1f}", end="")
    (master_means, master_saturation), (means, saturation) = rows["master"], rows["edit input"]
    assert np.abs(means - master_means).max() <= HDR_LEVELS
    assert abs(saturation - master_saturation) <= HDR_SATURATION * master_saturation
    # without the tone map the clip is far off: washed out (PQ) or dark (HLG)
    plain_means, plain_saturation = rows["plain"]
    assert (
        np.abs(plain_means - master_means).max() > 3 * HDR_LEVELS
        or abs(plain_saturation - master_saturation) > 3 * HDR_SATURATION * master_saturation
    )
    described = probe_clip(path).describe()
    assert f"HDR ({transfer}, BT.2020, peak 1000 cd/m2 from " in described and "the edit is SDR" in described
    assert any(
        f"HDR ({transfer}" in r.getMessage()
        for r in caplog.records
        if "Load Video (DiffFERV)" in r.getMessage()
    )


def test_non_square_pixels_are_made_square(tmp_path):
    """A 176x144 clip with pixels 128:117 wide (PAL 4:3) shows 193x144: a square drawn in display space
    comes out square, in the probe (the plan) and in the frames."""
    from comfyui_diffferv.video.decode import probe_clip, read_clip

    coded = np.zeros((3, 144, 176, 3), np.uint8)
    side = 60  # display pixels; coded width = side * 117 / 128
    coded[:, 40 : 40 + side, 50 : 50 + round(side * 117 / 128)] = 255
    path = write_clip(tmp_path / "sar.mp4", coded, sample_aspect=Fraction(128, 117))
    assert "non-square pixels (128:117): 176x144 coded, resampled to 193x144" in probe_clip(path).describe()
    frame = uint8(read_clip(path, 1).frames)[0]
    rows, columns = np.nonzero(frame[..., 0] > 128)
    assert frame.shape[:2] == (144, 193)
    assert columns.max() - columns.min() + 1 == pytest.approx(rows.max() - rows.min() + 1, abs=2)


# ------------------------------------------------------------------------------------------------------
# ComfyUI's VIDEO type


def test_load_video_reads_a_connected_video_upright(comfy, tmp_path):
    """Core Load Video (a file-backed VIDEO) -> Load Video (DiffFERV) decodes it here: a phone clip comes
    out upright; Video Combine's VIDEO goes to core Save Video."""
    path = write_clip(tmp_path / "core_phone.mp4", pattern(3, 64, 128), matrix=display_matrix(-90))
    name = into_input(comfy, path)
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": name}},
        "2": {"class_type": NODE, "inputs": {"video": name, **LOAD, "short_side": 64, "source": ["1", 0]}},
        "3": {
            "class_type": "DiffFERV_VideoCombine",
            "inputs": {
                "images": ["2", 0], "fps": ["2", 1], "filename_prefix": "tests/core_in", "format": "mp4 (h264)",
                "quality": 80, "save_output": True,
            },
        },
        "4": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["3", 1], "filename_prefix": "tests/core_out", "format": "auto", "codec": "auto"},
        },
    }  # fmt: skip
    outputs = comfy.run_prompt(prompt)
    saved = outputs["4"]["images"][0]
    written = probe(comfy.workdir / "output" / saved["subfolder"] / saved["filename"])
    expected = shown(probe(path).frames, -90)
    assert written.frames.shape == expected.shape == (3, 128, 64, 3)
    assert psnr(written.frames, expected) > 30 and written.fps == pytest.approx(25.0)


def test_load_video_keeps_the_trim_of_a_core_video(comfy, tmp_path):
    """A file-backed VIDEO trimmed in the core nodes (newer ComfyUI: VideoFromFile's start_time and
    duration) gives Load Video (DiffFERV) the frames shown in that span, and its skip and cap count
    within it; the audio is cut to the kept frames."""
    import inspect

    from comfy_api.latest import InputImpl

    if "start_time" not in inspect.signature(InputImpl.VideoFromFile).parameters:
        pytest.skip("this ComfyUI's VIDEO carries no trim window")
    sample_rate = 16000
    path = write_clip(
        tmp_path / "trim.mp4",
        pattern(30, 64, 64),
        audio=tone(30 / 25, 0.0, sample_rate),
        sample_rate=sample_rate,
    )
    source = probe(path).frames
    video = InputImpl.VideoFromFile(str(path), start_time=0.4, duration=0.6)  # frames 10..24 at 25 fps
    (images, fps, count, audio), _ = comfy.run_node(
        NODE, video=None, **{**LOAD, "skip_first_frames": 2, "every_nth": 3}, source=video
    )
    assert count == 5 and fps == pytest.approx(25 / 3)
    decoded = uint8(images)
    for kept, frame in enumerate((12, 15, 18, 21, 24)):
        errors = [np.abs(decoded[kept].astype(int) - source[i].astype(int)).mean() for i in range(30)]
        assert int(np.argmin(errors)) == frame, (kept, frame, errors)
    assert audio["waveform"].shape[-1] == pytest.approx(15 * sample_rate / 25, abs=sample_rate / 25)


def test_load_video_picks_and_sizes_a_video_made_of_frames(comfy):
    """A VIDEO from frames (core Create Video's kind): skipped, thinned, capped and sized like a file,
    with its audio cut to the kept span."""
    from comfy_api.latest import InputImpl, Types

    frames = torch.rand(10, 90, 160, 3)
    audio = {"waveform": torch.rand(1, 1, 16000), "sample_rate": 16000}  # 1 s for 10 frames at 10 fps
    video = InputImpl.VideoFromComponents(
        Types.VideoComponents(images=frames, frame_rate=Fraction(10), audio=audio)
    )
    (images, fps, count, cut), _ = comfy.run_node(
        NODE, video=None, **{**LOAD, "max_frames": 3, "skip_first_frames": 2, "every_nth": 2}, source=video
    )
    assert count == 3 and fps == 5.0 and images.shape == (3, 64, 64 * 160 // 90 // 64 * 64, 3)
    assert torch.equal(cut["waveform"], audio["waveform"][..., 3200:12800])  # 0.2 s .. 0.8 s


def test_video_combine_gives_a_video_for_gif_too(comfy):
    frames = torch.rand(4, 64, 64, 3)
    (_, video), _ = comfy.run_node(
        "DiffFERV_VideoCombine", images=frames, fps=8.0, filename_prefix="tests/vid", format="gif", quality=50,
        save_output=True,
    )  # fmt: skip
    components = video.get_components()
    assert torch.equal(components.images, frames) and float(components.frame_rate) == 8.0


@pytest.mark.slow
def test_core_video_nodes_around_the_edit(comfy, sd15_checkpoint, tmp_path):
    """Core Load Video -> Get Video Components -> the pack's edit (the shipped face-edit workflow's nodes,
    the real SD1.5 architecture with random weights, 3 frames at 64 px, 2 steps) -> Create Video -> Save
    Video: the saved video has the clip's frames, size and rate, and its sound."""
    from comfyui_diffferv.headless.workflow import prepare_prompt
    from conftest import ROOT

    face_edit = json.loads((ROOT / "workflows" / "api" / "diffferv_face_edit.json").read_text())
    comfy.add_model_folder("checkpoints", sd15_checkpoint.parent)
    frames = pattern(3, 64, 64)
    name = into_input(comfy, write_clip(tmp_path / "core_edit.mp4", frames, rate=10, audio=tone(0.3, 0.1)))
    prompt = prepare_prompt(
        face_edit, video=name, checkpoint=sd15_checkpoint.name, source="a photo of a woman",
        edit="a photo of an old woman", frames=3, size=64, steps=2,
    )  # fmt: skip
    load = next(key for key, node in prompt.items() if node["class_type"] == NODE)
    components = {0: ["21", 0], 1: ["21", 2], 3: ["21", 1]}  # Load Video's images, fps, audio
    for node in prompt.values():
        for key, value in node["inputs"].items():
            if isinstance(value, list) and value[0] == load:
                node["inputs"][key] = components[value[1]]
    decoded = next(key for key, node in prompt.items() if node["class_type"] == "VAEDecode")
    for key in [load] + [k for k, n in prompt.items() if n["class_type"] == "DiffFERV_VideoCombine"]:
        del prompt[key]
    prompt.update(
        {
            "20": {"class_type": "LoadVideo", "inputs": {"file": name}},
            "21": {"class_type": "GetVideoComponents", "inputs": {"video": ["20", 0]}},
            "22": {"class_type": "CreateVideo", "inputs": {"images": [decoded, 0], "fps": ["21", 2], "audio": ["21", 1]}},
            "23": {
                "class_type": "SaveVideo",
                "inputs": {"video": ["22", 0], "filename_prefix": "tests/core_edit", "format": "mp4", "codec": "h264"},
            },
        }
    )  # fmt: skip
    outputs = comfy.run_prompt(prompt)
    saved = outputs["23"]["images"][0]
    written = probe(comfy.workdir / "output" / saved["subfolder"] / saved["filename"])
    assert written.frames.shape == (3, 64, 64, 3) and written.fps == pytest.approx(10.0)
    assert written.audio_seconds == pytest.approx(0.3, abs=0.05)


# ------------------------------------------------------------------------------------------------------
# The `edit` command: the plan says what was done to the clip; refusals come before any model loads


def test_the_edit_plan_says_the_clip_was_turned_and_taken_at_a_constant_rate(tmp_path):
    from comfyui_diffferv.headless.plan import plan_run
    from test_workflows import long_clip_prompt

    frames = pattern(48, 64, 96)
    path = write_clip(tmp_path / "phone.mp4", frames, VFR_TIMES, VFR_END, matrix=display_matrix(-90))
    _, lines, count = plan_run(long_clip_prompt(video=path.name, size=64, steps=2), path, free_ram=2**36)
    assert lines[0] == (
        "video: phone.mp4, 48 frames of 64x96 (shown turned 90 degrees clockwise: coded 96x64), variable frame "
        "rate: taken at a constant 14.29 fps by timestamps (3.36 s, as long as the source)"
    )
    assert count == 48 and lines[1].startswith("edit: 48 frames at 64x64")


def edit_refusal(tmp_path, sd15_checkpoint, *arguments: str) -> str:
    from test_edit_command_inputs import refused

    return refused(tmp_path, "--checkpoint", str(sd15_checkpoint), "--size", "64", *arguments)


def test_edit_refuses_a_damaged_clip_before_any_model_loads(tmp_path, sd15_checkpoint, comfy, damaged_clip):
    video = comfy.workdir / "input" / damaged_clip
    said = edit_refusal(tmp_path, sd15_checkpoint, "--video", str(video), "--frames", "0")
    frame = int(said.split("decoding stops at frame ")[1].split(" ")[0])
    assert said.startswith(f"edit: --video: {video} is damaged: decoding stops at frame {frame} (")
    assert f"keep the {frame} frames before it with --frames {frame}, or re-encode the file" in said


@pytest.mark.parametrize(
    ("flag", "where"),
    [("--output", "proc"), ("--compare", "under a file"), ("--report", "a folder in the way")],
)
def test_edit_checks_every_output_before_any_model_loads(tmp_path, sd15_checkpoint, flag, where):
    """An output in a folder where no file can be created (/proc), under a file, or a folder where the
    report's JSON would go: one sentence naming the flag and the path, nothing written."""
    output = tmp_path / "edit.mp4"
    arguments = ["--output", str(output)]
    if where == "proc":
        arguments = ["--output", "/proc/diffferv/edit.mp4"]
        expected = (
            "edit: --output: /proc/diffferv/edit.mp4 cannot be written: no file can be created in /proc"
        )
    elif where == "under a file":
        (tmp_path / "notes.txt").write_text("a file")
        arguments += ["--compare", str(tmp_path / "notes.txt" / "compare.mp4")]
        expected = f"edit: --compare: {tmp_path}/notes.txt/compare.mp4 cannot be written: {tmp_path}/notes.txt is a file"
    else:
        (tmp_path / "edit.report.json").mkdir()
        arguments += ["--report"]
        expected = f"edit: --report: {tmp_path}/edit.report.json is a folder; give a file name"
    said = edit_refusal(tmp_path, sd15_checkpoint, *arguments)
    assert said.startswith(expected) and flag in said


def test_an_output_needs_room_for_its_estimate(tmp_path):
    from comfyui_diffferv.headless.checks import check_writable, estimated_bytes
    from comfyui_diffferv.headless.cli import InputRefusedError

    free = shutil.disk_usage(tmp_path).free
    check_writable("--output", tmp_path / "a.mp4", estimated_bytes("mp4 (h264)", 16, 512, 512))
    with pytest.raises(InputRefusedError, match=r"--output: .*/a.mp4 needs about .* free; free some space"):
        check_writable("--output", tmp_path / "a.mp4", free + 2**30)


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_every_axis_aligned_matrix_turns_pixels_as_a_player_shows_them(degrees, mirrored):
    """The eight display matrices, read from FFmpeg's byte layout, against numpy's turn (no video)."""
    import struct

    from comfyui_diffferv.video.orientation import orientation_of

    pixels = np.arange(2 * 3 * 4 * 3).reshape(2, 3, 4, 3)
    orientation = orientation_of(struct.pack("=9i", *display_matrix(degrees, mirrored)))
    assert np.array_equal(np.stack([orientation.apply(p) for p in pixels]), shown(pixels, degrees, mirrored))
    assert orientation.mirrored == mirrored and orientation.clockwise_degrees == (-degrees) % 360


@pytest.mark.slow
def test_edit_writes_a_phone_clip_upright_and_in_time(sd15_checkpoint, tmp_path):
    """`edit` end to end (the real SD1.5 architecture, random weights, 64 px, 2 steps) on a portrait phone
    clip (coded 128x64, turned 90 degrees clockwise) at a variable rate with sound: the output is portrait,
    as long as the source (within a frame) and carries the sound; the plan says both."""
    from test_workflows import run_edit

    times, end = [0.0, 0.04, 0.08, 0.28], 0.38
    video = write_clip(
        tmp_path / "phone.mp4",
        pattern(4, 64, 128),
        times,
        end,
        matrix=display_matrix(-90),
        audio=tone(end, 0.1),
    )
    output = tmp_path / "edit.mp4"
    result = run_edit(
        "--checkpoint", str(sd15_checkpoint), "--video", str(video), "--frames", "0", "--size", "64",
        "--steps", "2", "--window", "0", "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(shown turned 90 degrees clockwise: coded 128x64), variable frame rate" in result.stdout
    written = probe(output)
    assert written.frames.shape == (4, 128, 64, 3)  # portrait
    assert len(written.frames) / written.fps == pytest.approx(end, abs=1 / written.fps)
    # the sound lasts as long as the output's frames, to the AAC frame its encoder pads the end to
    assert written.audio_seconds == pytest.approx(len(written.frames) / written.fps, abs=1024 / 48000)
