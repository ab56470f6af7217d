"""A long edit in segments through ComfyUI (issue 33): `edit` as a user runs it, the real SD1.5 architecture
with random weights, on a clip with sound, stopped with Ctrl-C after its first segment and run again:
the second run edits only the segment left, and the output holds every frame once at the clip's rate with
the clip's sound. (The assembly frame by frame, servers and the preview: test_segments.py.)"""

from __future__ import annotations

import signal
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
from comfyui_diffferv.video.container import read_timing
from comfyui_diffferv.video.decode import read_clip
from comfyui_diffferv.video.encode import FORMATS, Sound, VideoWriter
from conftest import ROOT
from video_probe import audio_track

FRAMES, SEGMENT = 28, 16  # two segments of 16 sharing 4 frames
TINY = ["--size", "64", "--steps", "2", "--window", "4", "--overlap", "1", "--cache-mode", "recompute"]


@pytest.fixture(scope="module")
def clip_with_sound(tmp_path_factory):
    """The demo clip's first FRAMES frames at 25 fps with a beep from 0.4 s to 0.6 s under them."""
    path = tmp_path_factory.mktemp("clip") / "talking.mp4"
    frames = read_clip(ROOT / "workflows" / "media" / "talking_face_long.mp4", FRAMES).frames
    rate = 44100
    t = np.arange(round(FRAMES / 25 * rate)) / rate
    beep = (((t >= 0.4) & (t < 0.6)) * 0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[None]
    with VideoWriter(path, 25.0, FORMATS["mp4 (h264)"], 90, sound=Sound(rate, 1, [beep])) as writer:
        for frame in (frames.numpy() * 255).round().astype(np.uint8):
            writer.write(frame)
    return path


def edit_process(*arguments: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT), "edit", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_a_long_edit_stopped_after_a_segment_resumes_and_keeps_time_and_sound(
    sd15_checkpoint, clip_with_sound, tmp_path
):
    output = tmp_path / "long.mp4"
    arguments = ["--checkpoint", str(sd15_checkpoint), "--video", str(clip_with_sound), *TINY]
    arguments += ["--segment", str(SEGMENT), "--output", str(output)]
    first = edit_process(*arguments)
    seen = []
    for line in first.stdout:
        seen.append(line)
        if line.startswith("segment 1/2") and " done on this machine" in line:
            first.send_signal(signal.SIGINT)  # Ctrl-C once the first segment is kept
            break
    _, stderr = first.communicate(timeout=300)
    said = "".join(seen)
    assert first.returncode == 130, stderr[-2000:]
    assert (
        f"segments: {FRAMES} frames in 2 segments of {SEGMENT}" in said and "each segment: windows:" in said
    )
    assert "1 edited segments are kept in" in stderr and "the same command resumes from there" in stderr
    assert not output.exists()

    second = subprocess.run(
        [sys.executable, str(ROOT), "edit", *arguments], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming: 1 of 2 segments were edited by an earlier run" in second.stdout
    assert "segment 1/2" not in second.stdout and "segment 2/2 (frames 12-27) done" in second.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4"]  # the segments' folder is gone

    timing, source = read_timing(output), read_timing(clip_with_sound)
    assert timing.frames == FRAMES and np.array_equal(
        timing.starts - timing.starts[0], source.starts - source.starts[0]
    )
    assert read_clip(output, 0).frames.shape == (FRAMES, 64, 64, 3)
    start, samples, rate = audio_track(output)
    loud = np.flatnonzero(np.abs(samples).max(axis=0) > 0.25) / rate + start
    assert loud[0] == pytest.approx(0.4, abs=0.003) and loud[-1] == pytest.approx(0.6, abs=0.003)
    assert start + samples.shape[1] / rate == pytest.approx(FRAMES / 25, abs=1024 / rate + 1e-3)
    with av.open(str(output)) as container:
        assert container.streams.video[0].average_rate == Fraction(25)
