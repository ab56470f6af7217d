"""Videos encoded apart joined into one without encoding them again (`join_videos`): the packets of each
part follow those of the part before, shifted by its duration, and the sound is muxed once over the whole
(`video.encode.mux_audio`). A long edit writes each finished segment's frames as a part of the output's
format, so that an interrupted edit keeps what it wrote; the parts are joined when the last is done.
Memory: one packet and one audio chunk. No ComfyUI import."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av

from .encode import Sound, VideoFormat, add_audio_stream, mux_audio


def join_videos(
    parts: Sequence[Path], path: Path, video_format: VideoFormat, sound: Sound | None = None
) -> int:
    """Write the parts' video streams (the same codec, size and rate: videos written with the same
    `video.encode.VideoWriter` settings) one after another to `path`, with `sound` cut to their duration.
    Returns the frame count. A part's timestamps are shifted by the frames before it at the parts' rate
    and rounded as one encoding of the whole would round them, so the output plays as one clip at that
    rate."""
    if video_format.codec is None:
        raise ValueError(f"{video_format.extension} cannot be joined: it is written whole")
    frames, shift = 0, 0
    with av.open(str(path), mode="w") as output:
        stream = audio_stream = None
        for part in parts:
            with av.open(str(part)) as source:
                given = source.streams.video[0]
                if stream is None:
                    stream = output.add_stream_from_template(given)
                    if sound is not None and video_format.audio_codec is not None:
                        audio_stream = add_audio_stream(output, video_format, sound)
                rate = Fraction(given.average_rate or given.guessed_rate)
                count = 0
                for packet in source.demux(given):
                    if packet.dts is None and packet.pts is None:
                        continue  # the demuxer's end-of-stream marker
                    packet.pts = _shifted(packet.pts, shift, rate, given.time_base)
                    packet.dts = _shifted(packet.dts, shift, rate, given.time_base)
                    packet.stream = stream
                    output.mux(packet)
                    count += 1
                shift += count
        if stream is None:
            raise ValueError("no part to join")
        frames = shift
        if audio_stream is not None:
            mux_audio(output, audio_stream, sound, frames / float(rate))
    return frames


def _shifted(stamp: int | None, frames: int, rate: Fraction, time_base: Fraction) -> int | None:
    """A part's timestamp `stamp` (in `time_base`) moved `frames` frames of `rate` later, rounded from
    the frame it stands for (a container's coarse time base, e.g. WebM's milliseconds, rounds each)."""
    if stamp is None:
        return None
    frame = round(stamp * time_base * rate)
    return math.floor((frames + frame) / rate / time_base + Fraction(1, 2))  # half up, as FFmpeg rounds
