"""Long edits in segments (issue 33), the parts that need no model: where the segments lie, the crossfade
against a per-pixel reference, parts joined without encoding again against one encoding of the whole, the
sound read a chunk at a time against the whole decode, the seeking decoder against decoding from the
start, the assembly and its resume; then `edit --server` on stand-in servers whose "edit" of a frame says
which frame it is, so that the assembled clip can be checked frame by frame: one server or two, a server
lost on the way, a run stopped and resumed, a preview. (Through ComfyUI with the real architecture:
test_long_edit.py.)"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from aiohttp import web
from comfyui_diffferv.segments.assembly import Assembler, Output, SegmentFolder
from comfyui_diffferv.segments.blend import crossfade, fade_in_weights
from comfyui_diffferv.segments.plan import (
    MAX_SEGMENT,
    MIN_SEGMENT,
    SEGMENT_OVERLAP,
    plan_segments,
    segment_frames,
)
from comfyui_diffferv.segments.preview import preview_stretches
from comfyui_diffferv.video.audio import AudioSpan, audio_span, read_audio
from comfyui_diffferv.video.container import read_timing
from comfyui_diffferv.video.damage import DamagedClipError, find_damage
from comfyui_diffferv.video.decode import read_clip, video_frames
from comfyui_diffferv.video.encode import FORMATS, Sound, write_video
from comfyui_diffferv.video.join import join_videos
from comfyui_diffferv.video.staged import staged
from comfyui_diffferv.video.timing import Picking
from conftest import ROOT
from real_clips import damage
from standin_server import SegmentProducer, StandIn, batch, edit, frame_of

LONG_CLIP = ROOT / "workflows" / "media" / "talking_face_long.mp4"  # 121 frames at 25 fps
LOSSLESS = FORMATS["mkv (ffv1, lossless)"]
SERVER_EDIT = ["--size", "64", "--steps", "2", "--window", "4", "--overlap", "1", "--cache-mode", "recompute"]


# ------------------------------------------------------------------ where the segments lie


def test_segments_cover_the_range_once_each_within_its_length():
    """Any clip and segment length: segments of equal length, at most the length asked, neighbours sharing
    at least the overlap, the frames each writes tiling the range exactly once."""
    cases = [(total, length) for total in (17, 33, 100, 121, 999, 2000) for length in (16, 24, 40, 300, 4096)]
    cases += [
        (random.Random(seed).randrange(2, 20000), random.Random(-seed).randrange(16, 5000))
        for seed in range(40)
    ]
    for total, length in cases:
        segments = plan_segments(total, length)
        if length >= total:
            assert [(s.start, s.frames) for s in segments] == [(0, total)]
            continue
        overlap = min(SEGMENT_OVERLAP, length // 4)
        assert len({s.frames for s in segments}) == 1 and segments[0].frames <= length, (total, length)
        assert segments[0].start == 0 and segments[-1].end == total
        written = [frame for s in segments for frame in range(*s.written)]
        assert written == list(range(total)), (total, length)
        for before, after in itertools.pairwise(segments):
            assert before.end - after.start == before.blend_out == after.blend_in >= overlap
        stride = length - overlap
        assert len(segments) == -(-(total - overlap) // stride)  # the fewest


def test_the_automatic_length_is_what_half_the_free_ram_holds():
    per_frame = 17 * 2**20  # a 512 px frame in recompute mode (README)
    assert segment_frames(16 * 2**30, per_frame, 90_000) == 481
    assert segment_frames(16 * 2**30, per_frame, 400) == 0  # the whole clip fits: no segments
    assert segment_frames(2**30, per_frame, 90_000) == 30
    assert segment_frames(2**28, per_frame, 90_000) == MIN_SEGMENT  # the least that is still a video edit
    assert segment_frames(2**40, per_frame, 90_000) == MAX_SEGMENT


def test_preview_frames_spread_over_the_edit_each_inside_its_stretch():
    for total, count in [(121, 4), (5, 4), (90_000, 12), (8, 3)]:
        picked = preview_stretches(total, count)
        shown = [s.start + k for s, k in picked]
        assert shown == sorted(shown) and len(picked) == min(count, total)
        for stretch, position in picked:
            assert stretch.start >= 0 and stretch.end <= total and 0 <= position < stretch.frames
    assert [s.start + k for s, k in preview_stretches(120, 4)] == [15, 45, 75, 105]


# ------------------------------------------------------------------ the crossfade


def test_crossfade_matches_a_per_pixel_reference():
    rng = np.random.default_rng(0)
    earlier, later = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    weights = fade_in_weights(6)
    assert np.all(np.diff(weights) > 0) and 0 < weights[0] < 0.06 and 0.94 < weights[-1] < 1
    assert np.allclose(weights + weights[::-1], 1.0)  # symmetric: neither segment favoured
    for weight in weights:
        blended = crossfade(earlier, later, float(weight))
        for y, x, c in itertools.product(range(5), range(7), range(3)):
            mixed = (
                np.float32(earlier[y, x, c]) * np.float32(1 - weight) + np.float32(later[y, x, c]) * weight
            )
            assert blended[y, x, c] == int(np.rint(mixed)), (y, x, c, weight)


# ------------------------------------------------------------------ video parts and sound


def clip_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(count)
    return rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["mp4 (h264)", "webm (vp9)", "mkv (ffv1, lossless)"])
@pytest.mark.parametrize("fps", [25.0, 30000 / 1001])
def test_parts_joined_play_as_one_encoding_of_the_whole(tmp_path, fmt, fps):
    """Frames written as three parts and joined: the frames of one encoding of the whole (exactly for the
    lossless format), every frame shown when the whole shows it, the sound cut to the joined length."""
    spec, frames = FORMATS[fmt], clip_frames(23)
    parts = []
    for index, (a, b) in enumerate([(0, 7), (7, 15), (15, 23)]):
        parts.append(tmp_path / f"part{index}.{spec.extension}")
        write_video(parts[-1], torch.from_numpy(frames[a:b]).float() / 255, fps, spec, 65)
    whole, joined = tmp_path / f"whole.{spec.extension}", tmp_path / f"joined.{spec.extension}"
    write_video(whole, torch.from_numpy(frames).float() / 255, fps, spec, 65)
    tone = (
        (0.2 * np.sin(np.arange(2 * 44100) / 44100 * 2 * np.pi * 440)).astype(np.float32)[None].repeat(2, 0)
    )
    assert join_videos(parts, joined, spec, Sound(44100, 2, [tone[:, :30000], tone[:, 30000:]])) == 23
    got, one = np.stack(list(video_frames(joined))), np.stack(list(video_frames(whole)))
    assert got.shape == one.shape == frames.shape
    if spec.codec == "ffv1":
        assert np.array_equal(got, frames)
    else:  # each part is its own encoding: as close to the source as the whole's encoding is
        error = np.abs(got.astype(int) - frames).mean()
        assert error <= 1.5 * np.abs(one.astype(int) - frames).mean() + 1
    assert np.array_equal(read_timing(joined).starts, read_timing(whole).starts)
    assert read_timing(joined).end == pytest.approx(read_timing(whole).end, abs=1e-3)
    with av.open(str(joined)) as container:
        audio = container.streams.audio[0]
        seconds = sum(frame.samples for frame in container.decode(audio)) / audio.codec_context.sample_rate
    assert seconds == pytest.approx(23 / fps, abs=0.03)


def clip_with_sound(path: Path, frames: int, fps: float, rate: int, sound_starts: float = 0.0) -> np.ndarray:
    """A clip of `frames` random frames whose sound (a rising tone, stereo) starts `sound_starts` seconds
    in; returns the samples written [2, T]."""
    t = np.arange(round((frames / fps - sound_starts) * rate)) / rate
    samples = np.stack([0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t), 0.2 * np.sin(2 * np.pi * 330 * t)])
    samples = samples.astype(np.float32)
    with av.open(str(path), "w") as container:
        video = container.add_stream("ffv1", rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = 32, 32, "bgr0"
        audio = container.add_stream("flac", rate=rate)
        audio.layout = "stereo"
        for image in clip_frames(frames, 32, 32):
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples.T.reshape(1, -1)), format="flt", layout="stereo"
        )
        frame.sample_rate, frame.pts, frame.time_base = rate, round(sound_starts * rate), Fraction(1, rate)
        container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return samples


def whole_decode(path: Path) -> tuple[float, np.ndarray, int]:
    """The reference: every audio sample decoded at once, (first sample's time, float [C, T], rate)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
        channels = stream.codec_context.layout.nb_channels
        packed = [f.to_ndarray().reshape(-1, channels).T for f in frames]  # flac decodes packed s16
        samples = np.concatenate(packed, axis=1).astype(np.float32) / np.iinfo(packed[0].dtype).max
        return float(frames[0].time), samples, stream.codec_context.sample_rate


@pytest.mark.parametrize("sound_starts", [0.0, 0.3])
def test_the_sound_of_a_span_read_in_chunks_is_the_whole_decode_cut(tmp_path, sound_starts):
    path = tmp_path / "sound.mkv"
    clip_with_sound(path, 50, 25.0, 44100, sound_starts)
    first, samples, rate = whole_decode(path)
    for start, end in [(0.0, 2.0), (0.5, 1.25), (1.96, 2.0), (0.1, 0.35)]:
        chunks = list(audio_span(AudioSpan(path, start, end)))
        got = np.concatenate(chunks, axis=1) if chunks else np.zeros((2, 0), np.float32)
        offset = round((first - start) * rate)
        reference = np.concatenate(
            [np.zeros((2, max(offset, 0)), np.float32), samples[:, max(-offset, 0) :]], axis=1
        )
        reference = reference[:, : int(np.ceil((end - start) * rate))]
        assert got.shape == reference.shape and np.array_equal(got, reference), (start, end)
        assert max((c.shape[1] for c in chunks), default=0) <= max(rate // 2, 8192)  # a chunk at a time
    audio = read_audio(AudioSpan(path, 0.5, 1.25))
    assert audio["sample_rate"] == rate and audio["waveform"].shape == (1, 2, round(0.75 * rate))


def write_gop_clip(path: Path, frames: np.ndarray) -> Path:
    """An h264 mp4 of uint8 frames [N, H, W, 3] at 25 fps with a keyframe every 8 frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.gop_size, stream.options = 8, {"crf": "18", "keyint_min": "8", "scenecut": "0"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_a_seeking_decode_gives_the_frames_of_a_decode_from_the_start(tmp_path):
    """A clip with a keyframe every 8 frames: read from any frame on, the frames are those a decode from
    the first frame gives (the decoder seeks to the keyframe before and drops what precedes)."""
    path = write_gop_clip(tmp_path / "gop.mp4", clip_frames(60, 64, 64))
    whole = read_clip(path, 0).frames
    for skip in [1, 7, 8, 9, 23, 40, 55, 59]:
        assert torch.equal(read_clip(path, 5, skip).frames, whole[skip : skip + 5]), skip
    talking = read_clip(LONG_CLIP, 0).frames
    for skip in [30, 100, 119]:
        assert torch.equal(read_clip(LONG_CLIP, 2, skip).frames, talking[skip : skip + 2]), skip


def test_damage_before_a_segment_does_not_stop_it(tmp_path):
    """A clip damaged near its start (keyframe every 8 frames): a segment from frame 32 on is neither
    refused by the damage scan nor by the reader, and gives the undamaged file's frames; from the start,
    both stop at the same frame."""
    path, good = tmp_path / "damaged.mp4", tmp_path / "good.mp4"
    write_gop_clip(good, clip_frames(60, 64, 64))
    path.write_bytes(good.read_bytes())
    damage(path, 0.1, 0.2)
    stopped = find_damage(path, Picking())
    assert stopped is not None and stopped.frame < 24
    with pytest.raises(DamagedClipError, match=f"decoding stops at frame {stopped.frame} "):
        read_clip(path, 0)
    assert find_damage(path, Picking(max_frames=20, skip_first=32)) is None
    assert torch.equal(read_clip(path, 20, 32).frames, read_clip(good, 20, 32).frames)


# ------------------------------------------------------------------ assembly and resume


def test_files_are_written_all_or_none(tmp_path):
    """`staged`: a group whose writing fails leaves the files as they were and no partial file; one that
    succeeds replaces them all (a folder made where missing)."""
    old, new = tmp_path / "a.mp4", tmp_path / "sub" / "b.json"
    old.write_text("before")
    with pytest.raises(OSError), staged([old, new]) as (a, b):
        a.write_text("after")
        raise OSError("disk full")
    assert old.read_text() == "before" and not new.exists()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["a.mp4"]
    with staged([old, new]) as (a, b):
        assert a.suffix == ".mp4" and a.parent == tmp_path and a.name.startswith(".")
        a.write_text("after")
        b.write_text("{}")
    assert old.read_text() == "after" and new.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.mp4", "b.json"]


def test_the_assembly_blends_the_shared_frames_and_resumes_where_it_stopped(tmp_path):
    """Three segments whose edits of the same frame differ (each segment adds its own shade): the output
    holds each frame once, a segment's own frames as it made them, the shared ones crossfaded from the
    earlier segment's to the later one's; a folder found again for the same edit resumes after the last
    segment written, and one for another edit is cleared."""
    total, segments = 40, plan_segments(40, 16)
    base = clip_frames(total, 16, 16)

    def made(segment):  # segment s's edit of frame k: the frame shifted by 20 s
        return np.stack(
            [(base[k].astype(int) + 20 * segment.index) % 256 for k in range(segment.start, segment.end)]
        ).astype(np.uint8)

    output = Output("edit", tmp_path / "out.mkv", LOSSLESS, 65)
    key = {"edit": "a", "frames": total}
    folder = SegmentFolder(output.path, key, segments, ["edit"])
    for segment in segments:
        produced = tmp_path / f"incoming{segment.index}.mkv"
        write_video(produced, torch.from_numpy(made(segment)).float() / 255, 25.0, LOSSLESS, 65)
        folder.keep(segment.index, {"edit": produced})
    assembler = Assembler(folder, [output], 25.0)
    assembler.write(0)
    again = SegmentFolder(output.path, key, segments, ["edit"])  # the run stopped here and starts again
    assert not again.cleared and again.is_written(0) and not again.is_written(1) and again.is_edited(2)
    resumed = Assembler(again, [output], 25.0)
    assert resumed.next_to_write() == 1
    resumed.write(1)
    resumed.write(2)
    assert resumed.finish(None) == [output.path]
    got = np.stack(list(video_frames(output.path)))
    expected = np.zeros_like(base)
    for segment in segments:
        frames = made(segment)
        weights = fade_in_weights(segment.blend_in)
        for position in range(segment.frames - segment.blend_out):
            frame = frames[position]
            if position < segment.blend_in:
                earlier = made(segments[segment.index - 1])[
                    position + segment.start - segments[segment.index - 1].start
                ]
                frame = crossfade(earlier, frame, float(weights[position]))
            expected[segment.start + position] = frame
    assert np.array_equal(got, expected)
    assert not list(again.path.glob("seg_*"))  # produced videos are deleted once written
    other = SegmentFolder(output.path, {**key, "edit": "b"}, segments, ["edit"])
    assert other.cleared and not other.is_edited(0)


# ------------------------------------------------------------------ edit --server, segment by segment


def expected_clip(first: int, count: int, size: int = 64) -> np.ndarray:
    return np.stack([frame_of(first + k, size) for k in range(count)])


def server_edit(tmp_path: Path, servers: list[StandIn], *extra: str, output: str = "out.mkv"):
    urls = [arg for server in servers for arg in ("--server", server.url)]
    return edit(
        *urls,
        "--video",
        str(LONG_CLIP),
        *SERVER_EDIT,
        "--lost-after",
        "5",
        *extra,
        "--output",
        str(tmp_path / output),
    )


def prompts_segments(server: StandIn) -> list[tuple[int, int]]:
    """(first frame, frames) of each prompt the server was sent, in order."""
    loads = [
        next(n["inputs"] for n in p.values() if n["class_type"] == "DiffFERV_LoadVideo")
        for p in server.prompts.values()
    ]
    return [(load["skip_first_frames"], load["max_frames"]) for load in loads]


HUNDRED_FROM_TEN = ["--start", "10", "--frames", "100", "--segment", "24"]


def test_a_long_edit_on_one_server_or_two_is_the_same_clip_frame_for_frame(tmp_path):
    """100 frames from frame 10 in segments of at most 24: every segment sent once (to whichever server is free),
    the assembled clips (and comparisons) of one server and of two equal frame for frame, each frame the
    one the servers made of it, at the clip's rate and length."""
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    for folder in (one_dir, two_dir):
        folder.mkdir()
    with StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as a:
        status, stdout, stderr = server_edit(
            one_dir,
            [a],
            *HUNDRED_FROM_TEN,
            "--compare",
            str(one_dir / "cmp.mkv"),
        )
    assert status == 0, stderr
    plan = plan_segments(100, 24)
    assert (
        f"segments: 100 frames in {len(plan)} segments of {plan[0].frames} (--segment 24: as asked)" in stdout
    )
    with (
        StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as b,
        StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as c,
    ):
        status, stdout, stderr = server_edit(
            two_dir,
            [b, c],
            *HUNDRED_FROM_TEN,
            "--compare",
            str(two_dir / "cmp.mkv"),
        )
        sent = prompts_segments(b) + prompts_segments(c)
    assert status == 0, stderr
    assert sorted(sent) == sorted(prompts_segments(a)) and len(set(sent)) == len(plan)  # each segment once
    assert prompts_segments(b) and prompts_segments(c)  # both servers took segments
    assert sorted(sent) == [(10 + s.start, s.frames) for s in plan]
    one, two = (
        np.stack(list(video_frames(one_dir / "out.mkv"))),
        np.stack(list(video_frames(two_dir / "out.mkv"))),
    )
    assert np.array_equal(one, two) and np.array_equal(one, expected_clip(10, 100))
    compared = np.stack(list(video_frames(two_dir / "cmp.mkv")))
    assert np.array_equal(compared, np.concatenate([expected_clip(10, 100)] * 2, axis=2))
    timing = read_timing(two_dir / "out.mkv")
    assert timing.frames == 100 and timing.end - timing.starts[0] == pytest.approx(4.0, abs=1e-3)
    assert sorted(p.name for p in two_dir.iterdir()) == ["cmp.mkv", "out.mkv"]  # nothing else left


def lost_after(prompts: int):
    """A /prompt route that answers as ComfyUI for `prompts` prompts, then as a server that went away."""
    count = {"n": 0}

    def wrap(server: StandIn):
        async def handler(request):
            count["n"] += 1
            if count["n"] > prompts:
                return web.Response(status=502, text="Bad Gateway")
            return await server.prompt(request)

        return handler

    return wrap


def test_a_server_lost_during_a_long_edit_leaves_its_segment_to_the_other(tmp_path):
    with (
        StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as good,
        StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as flaky,
    ):
        flaky.overrides["POST /prompt"] = lost_after(1)(flaky)
        status, stdout, stderr = server_edit(tmp_path, [flaky, good], "--frames", "80", "--segment", "24")
        sent = prompts_segments(good) + prompts_segments(flaky)
    assert status == 0, stderr
    assert f"server {flaky.url}" in stdout and "goes back to the queue" in stdout
    assert sorted(set(sent)) == [(s.start, s.frames) for s in plan_segments(80, 24)]
    assert np.array_equal(np.stack(list(video_frames(tmp_path / "out.mkv"))), expected_clip(0, 80))


def test_a_stopped_long_edit_resumes_without_editing_a_finished_segment(tmp_path):
    """The only server goes away after two segments: the edit stops (status 1) naming what it keeps; the
    same command on another server edits only the segments left, says so, and the clip is whole."""
    with StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as dying:
        dying.overrides["POST /prompt"] = lost_after(2)(dying)
        status, _, stderr = server_edit(tmp_path, [dying], "--frames", "80", "--segment", "24")
    assert status == 1
    assert "2 edited segments are kept in" in stderr and "run the same command again to resume" in stderr
    assert not (tmp_path / "out.mkv").exists()
    with StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as fresh:
        status, stdout, stderr = server_edit(tmp_path, [fresh], "--frames", "80", "--segment", "24")
        sent = prompts_segments(fresh)
    assert status == 0, stderr
    assert f"resuming: 2 of {len(plan_segments(80, 24))} segments were edited by an earlier run" in stdout
    assert sent == [(s.start, s.frames) for s in plan_segments(80, 24)[2:]]
    assert np.array_equal(np.stack(list(video_frames(tmp_path / "out.mkv"))), expected_clip(0, 80))
    assert not list(tmp_path.glob(".out.mkv.segments"))


def test_other_flags_start_the_long_edit_over(tmp_path):
    with StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as dying:
        dying.overrides["POST /prompt"] = lost_after(1)(dying)
        assert server_edit(tmp_path, [dying], "--frames", "60", "--segment", "24")[0] == 1
    with StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as fresh:
        status, stdout, stderr = server_edit(
            tmp_path, [fresh], "--frames", "60", "--segment", "24", "--edit", "a photo of a smiling woman"
        )
        assert status == 0, stderr
        assert "held another edit's segments: cleared" in stdout and len(fresh.prompts) == 3


def test_a_long_edit_to_a_gif_is_refused_before_anything_is_sent(tmp_path):
    with StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as server:
        status, _, stderr = server_edit(
            tmp_path, [server], "--frames", "60", "--segment", "24", output="out.gif"
        )
        assert status == 2 and not server.prompts
    assert (
        "--output: a gif is written whole in memory, and this edit of 60 frames runs in 3 segments" in stderr
    )


def test_preview_shows_frames_spread_over_the_clip_and_the_time_of_the_whole(tmp_path):
    from PIL import Image

    with StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as server:
        status, _, stderr = server_edit(tmp_path, [server], "--preview", "3", output="out.mp4")
        sent = prompts_segments(server)
    assert status == 0, stderr
    assert sent == [(s.start, s.frames) for s, _ in preview_stretches(121, 3)]
    sheet = np.asarray(Image.open(tmp_path / "out.preview.png").convert("RGB"))
    assert sheet.shape[1] == 3 * 64 * 4 and sheet.shape[0] > 2 * 256  # 3 frames of 64 px shown at 256
    for column, (stretch, position) in enumerate(preview_stretches(121, 3)):
        tile = sheet[256:512, column * 256 : (column + 1) * 256]
        shown = np.asarray(
            Image.fromarray(frame_of(stretch.start + position)).resize((256, 256), Image.Resampling.BICUBIC)
        )
        assert np.abs(tile.astype(int) - shown).max() <= 1
    assert "would take about" in stderr and not (tmp_path / "out.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("made_")) == ["out.preview.png"]


def test_a_preview_whose_only_server_is_lost_says_so_naming_it_once(tmp_path):
    with StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as dying:
        dying.overrides["POST /prompt"] = lost_after(1)(dying)
        status, _, stderr = server_edit(tmp_path, [dying], "--preview", "3", output="out.mp4")
    assert status == 1 and "--server: lost" in stderr and stderr.count(dying.url) == 1, stderr
    assert not (tmp_path / "out.preview.png").exists()


def test_a_batch_runs_a_long_job_in_segments_and_another_server_resumes_it(tmp_path):
    """A batch of a short job and a long one (80 frames in segments of 24) on a server that goes away
    after two prompts and a good one: the long job's kept segments are not edited again by the server that
    takes it over, and both outputs are whole."""
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(
        f'{LONG_CLIP} "a photo of a woman" "a photo of an old woman" --frames 80 --segment 24 --output long.mkv\n'
        f'{LONG_CLIP} "a photo of a woman" "a photo of a smiling woman" --frames 8 --output short.mkv\n'
    )
    out = tmp_path / "out"
    with (
        StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as dying,
        StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as good,
    ):
        dying.overrides["POST /prompt"] = lost_after(2)(dying)
        status, stdout, stderr = batch(
            "--jobs", str(jobs), "--output-dir", str(out), "--server", dying.url, "--server", good.url,
            "--lost-after", "5", "--", *SERVER_EDIT,
        )  # fmt: skip
        sent = prompts_segments(dying) + prompts_segments(good)
    assert status == 0, stdout + stderr
    assert f"server {dying.url} was lost during job 1 (talking_face_long.mp4)" in stdout
    long_segments = [(s.start, s.frames) for s in plan_segments(80, 24)]
    assert sorted(p for p in sent if p[1] != 8) == sorted(long_segments)  # each long segment edited once
    assert np.array_equal(np.stack(list(video_frames(out / "long.mkv"))), expected_clip(0, 80))
    assert np.array_equal(np.stack(list(video_frames(out / "short.mkv"))), expected_clip(0, 8))
    assert not list(out.glob(".*.segments"))


def test_a_batch_whose_only_server_is_lost_keeps_the_job_for_the_next_run_naming_the_server_once(tmp_path):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(
        f'{LONG_CLIP} "a photo of a woman" "a photo of an old woman" --frames 8 --output one.mkv\n'
    )
    with StandIn(LONG_CLIP, producer=SegmentProducer(tmp_path)) as dying:
        dying.overrides["POST /prompt"] = lost_after(0)(dying)
        status, stdout, stderr = batch(
            "--jobs", str(jobs), "--output-dir", str(tmp_path / "out"), "--server", dying.url, "--lost-after", "5",
            "--", *SERVER_EDIT,
        )  # fmt: skip
    assert status != 0, stdout + stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("batch: 1 job not run: every server was lost ("), last
    assert last.count(dying.url) == 1, last
