"""Small clips the way phones and damaged downloads make them, written with PyAV (tests only): a display
matrix (rotation, mirroring), frames at variable intervals, a soundtrack, damaged bytes.

Display matrices follow FFmpeg's definition (libavutil/display.h), built here from its formula for a
counter-clockwise rotation by `degrees` ([cos, -sin, 0, sin, cos, 0, 0, 0, 1] in 16.16 / 2.30 fixed point),
mirrored by negating the first column (what av_display_matrix_flip does for a horizontal flip). What the
viewer sees is written independently with numpy: `shown`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ONE, W_ONE = 1 << 16, 1 << 30


def display_matrix(degrees: int, mirrored: bool = False) -> list[int]:
    """FFmpeg's display matrix of a counter-clockwise turn by `degrees`, then mirrored left to right."""
    cos, sin = round(math.cos(math.radians(degrees))), round(math.sin(math.radians(degrees)))
    matrix = [cos * ONE, -sin * ONE, 0, sin * ONE, cos * ONE, 0, 0, 0, W_ONE]
    if mirrored:
        matrix[0], matrix[3] = -matrix[0], -matrix[3]
    return matrix


def shown(coded: np.ndarray, degrees: int, mirrored: bool = False) -> np.ndarray:
    """What a player shows of coded frames [..., H, W, C] with that matrix (np.rot90 turns
    counter-clockwise)."""
    turned = np.rot90(coded, k=degrees // 90, axes=(-3, -2))
    return turned[..., ::-1, :] if mirrored else turned


def pattern(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 [frames, height, width, 3]: smooth colour gradients (kept well by h264) with a bright block
    near the top-left corner, different in every frame, so any turn or mirror shows."""
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    out = np.empty((frames, height, width, 3), np.float64)
    for index in range(frames):
        shift = index / max(frames, 1)
        out[index, ..., 0] = x * 0.6 + shift * 0.3
        out[index, ..., 1] = y * 0.6
        out[index, ..., 2] = (1 - x) * y * 0.5
    out[:, : height // 4, : width // 6] = 1.0
    return (out.clip(0, 1) * 255).round().astype(np.uint8)


def write_clip(
    path: Path,
    frames: np.ndarray,
    times: list[float] | None = None,
    end: float | None = None,
    rate: int = 25,
    matrix: list[int] | None = None,
    audio: np.ndarray | None = None,
    sample_rate: int = 48000,
    sample_aspect: Fraction | None = None,
) -> Path:
    """An h264 mp4 of uint8 frames [N, H, W, 3], frame i shown from `times[i]` seconds (default i / rate)
    until the next (the last until `end`), with an optional display `matrix`, a mono float32 `audio`
    track [T] (AAC) starting at 0, and the pixels' `sample_aspect` ratio (default square)."""
    times = list(times) if times is not None else [i / rate for i in range(len(frames))]
    end = end if end is not None else times[-1] + 1 / rate
    base = Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.time_base = stream.codec_context.time_base = base
        if matrix is not None:
            stream.set_display_matrix(matrix)
        if sample_aspect is not None:
            stream.codec_context.sample_aspect_ratio = sample_aspect
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=sample_rate)
            sound.layout = "mono"
        lengths = {}  # pts -> duration in ms: the encoder leaves packet durations out, the muxer guesses
        for image, start, stop in zip(frames, times, [*times[1:], end], strict=True):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = round(start * 1000), base
            lengths[frame.pts] = round(stop * 1000) - frame.pts
            container.mux(timed(stream.encode(frame), lengths))
        container.mux(timed(stream.encode(), lengths))
        if sound is not None:
            chunk = av.AudioFrame.from_ndarray(audio.astype(np.float32)[None], format="flt", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = sample_rate, 0, Fraction(1, sample_rate)
            container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
    return path


def timed(packets, lengths: dict[int, int]):
    """The encoder's packets with the durations their frames were given (ms)."""
    for packet in packets:
        packet.duration = lengths[packet.pts]
    return packets


def damage(path: Path, start: float = 0.3, stop: float = 0.7, seed: int = 0) -> Path:
    """Overwrite the bytes from `start` to `stop` (fractions of the file) with random bytes, in place: the
    container still opens, decoding fails part-way."""
    data = bytearray(path.read_bytes())
    first, last = int(len(data) * start), int(len(data) * stop)
    data[first:last] = np.random.default_rng(seed).integers(0, 256, last - first, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def tone(seconds: float, onset: float, sample_rate: int = 48000, hz: float = 1000.0) -> np.ndarray:
    """float32 [T]: silence, then a sine from `onset` seconds on."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return np.where(t >= onset, 0.5 * np.sin(2 * np.pi * hz * t), 0.0).astype(np.float32)


def onset(waveform: np.ndarray, sample_rate: int, level: float = 0.1) -> float:
    """Seconds until the first sample louder than `level` (waveform [C, T] or [T])."""
    loud = np.flatnonzero(np.abs(np.atleast_2d(waveform)).max(axis=0) > level)
    return float(loud[0]) / sample_rate


# ------------------------------------------------------------------------------------------------------
# HDR clips made from an SDR master the way ITU-R BT.2408 maps SDR into HDR (SDR white at 203 cd/m2),
# written here from the standards' formulas (ITU-R BT.2100), independently of video/pixels.py.

BT709_TO_BT2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])
SDR_WHITE_NITS = 203.0


def sdr_to_pq(rgb: np.ndarray) -> np.ndarray:
    """SDR BT.709 R'G'B' [..., 3] in [0, 1] (gamma 2.4) -> PQ-coded BT.2020 R'G'B' in [0, 1]."""
    nits = (rgb**2.4 @ BT709_TO_BT2020.T) * SDR_WHITE_NITS
    m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = np.clip(nits / 10000.0, 0.0, 1.0) ** m1
    return ((c1 + c2 * y) / (1 + c3 * y)) ** m2


def sdr_to_hlg(rgb: np.ndarray, display_peak: float = 1000.0, gamma: float = 1.2) -> np.ndarray:
    """SDR BT.709 R'G'B' in [0, 1] -> HLG-coded BT.2020 R'G'B': SDR light at 203 cd/m2 white, through the
    inverse of HLG's OOTF (a `display_peak` display) and HLG's OETF."""
    display = (rgb**2.4 @ BT709_TO_BT2020.T) * SDR_WHITE_NITS / display_peak
    luminance = display @ np.array([0.2627, 0.6780, 0.0593])
    scene_luminance = np.maximum(luminance, 1e-12) ** (1 / gamma)
    scene = display / (scene_luminance ** (gamma - 1))[..., None]
    a, b, c = 0.17883277, 1 - 4 * 0.17883277, 0.5 - 0.17883277 * np.log(4 * 0.17883277)
    scene = np.clip(scene, 0.0, 1.0)
    return np.where(scene <= 1 / 12, np.sqrt(3 * scene), a * np.log(np.maximum(12 * scene - b, 1e-12)) + c)


def yuv420p10(rgb: np.ndarray) -> np.ndarray:
    """BT.2020 R'G'B' [H, W, 3] in [0, 1] (H, W even) -> the planes of a 10-bit limited-range 4:2:0
    frame, stacked as PyAV's yuv420p10le array [H * 3 / 2, W] (non-constant-luminance matrix)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.2627 * r + 0.6780 * g + 0.0593 * b
    cb, cr = (b - y) / 1.8814, (r - y) / 1.4746

    def half(plane):
        return plane.reshape(plane.shape[0] // 2, 2, plane.shape[1] // 2, 2).mean(axis=(1, 3))

    width = rgb.shape[1]
    luma = np.round(64 + 876 * y)
    chroma = [np.round(512 + 896 * half(c)).reshape(-1, width) for c in (cb, cr)]
    return np.concatenate([luma, *chroma]).clip(0, 1023).astype(np.uint16)


def write_hdr_clip(
    path: Path, frames: np.ndarray, transfer: str, codec: str = "libx265", rate: int = 25
) -> Path:
    """A 10-bit HDR clip of SDR uint8 frames [N, H, W, 3] (H, W even): `transfer` "PQ" (with MaxCLL 1000
    and a 1000 cd/m2 mastering display, as phones write) or "HLG", BT.2020 primaries and matrix; HEVC
    (libx265, .mp4) or AV1 (libsvtav1, .webm; colour tags only)."""
    code = {"PQ": 16, "HLG": 18}[transfer]
    encode = sdr_to_pq if transfer == "PQ" else sdr_to_hlg
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p10le"
        context = stream.codec_context
        context.color_primaries, context.color_trc, context.colorspace = 9, code, 9
        context.color_range = 1  # limited
        if codec == "libx265":
            params = "log-level=error:colorprim=bt2020:colormatrix=bt2020nc:transfer=" + (
                "smpte2084:max-cll=1000,400:master-display=G(13250,34500)B(7500,3000)R(34000,16000)"
                "WP(15635,16450)L(10000000,1)"
                if transfer == "PQ"
                else "arib-std-b67"
            )
            stream.options = {"x265-params": params}
        else:
            stream.options = {"crf": "20"}
        for image in frames:
            frame = av.VideoFrame.from_ndarray(yuv420p10(encode(image / 255.0)), format="yuv420p10le")
            frame.color_range = 1
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
