"""The picture a decoded frame shows, as the edit works on it: 8-bit RGB in SDR BT.709 with square pixels.

Two kinds of clip need more than FFmpeg's plain RGB conversion:

- **HDR** (phones record it by default): the PQ (SMPTE ST 2084) or HLG (ARIB STD-B67) transfer, usually
  with BT.2020 primaries and 10 bits. Read as 8-bit RGB without conversion its code values look grey
  and flat (a talking-face clip: mean RGB 82/74/63 where its SDR master has 127/103/83). Here the frame
  is read at 16 bits in its own matrix and turned into display light (PQ's EOTF; for HLG its inverse
  OETF and the OOTF of a 1000 cd/m2 display, system gamma 1.2); BT.2020 primaries become BT.709's;
  ITU-R BT.2390's EETF (the Hermite roll-off in PQ space) maps the clip's peak (its MaxCLL, else its
  mastering display's peak, else 1000 cd/m2) down to HDR reference white, 203 cd/m2 (ITU-R BT.2408),
  which becomes SDR white. The curve acts on the largest of R, G and B, so hues stay; colours outside
  BT.709 are clipped; the result is encoded with BT.1886's gamma (2.4). Below about 88 cd/m2 (for a
  1000 cd/m2 peak) nothing changes; SDR content carried in HDR comes back within a few levels.
- **Non-square pixels** (a sample aspect ratio other than 1:1, e.g. 128:117 in a 176x144 PAL clip):
  resampled to square pixels at the width the display shows (the height is kept).

Everything else is FFmpeg's own conversion to 8-bit RGB, as before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

REFERENCE_WHITE = 203.0
"""cd/m2 of HDR reference white (ITU-R BT.2408): SDR's 100%."""
DEFAULT_PEAK = 1000.0
"""cd/m2 a PQ clip is taken to reach when it says nothing of its peak; HLG's nominal display peak."""
HLG_SYSTEM_GAMMA = 1.2
"""The HLG OOTF's gamma for a 1000 cd/m2 display."""
SDR_GAMMA = 2.4
"""BT.1886's display gamma: how SDR code values become light."""
BT2020_TO_BT709 = np.array(
    [[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]], np.float32
)
"""Linear BT.2020 RGB -> linear BT.709 RGB (ITU-R BT.2087)."""

# FFmpeg's colour codes (AVColorTransferCharacteristic, AVColorPrimaries, AVColorSpace): fixed values,
# read with getattr since older PyAV releases do not expose a frame's transfer.
TRANSFERS = {16: "PQ", 18: "HLG"}
PRIMARIES_BT2020, PRIMARIES_UNSPECIFIED = 9, 2
MATRIX_BT2020_NCL, MATRIX_UNSPECIFIED = 9, 2

_PQ = (0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875)  # m1, m2, c1, c2, c3
_HLG = (0.17883277, 0.28466892, 0.55991073)  # a, b, c


def pq_to_nits(signal: np.ndarray) -> np.ndarray:
    """PQ's EOTF: signal in [0, 1] -> display light in cd/m2 (0..10000)."""
    m1, m2, c1, c2, c3 = _PQ
    p = np.clip(signal, 0.0, 1.0) ** (1.0 / m2)
    return 10000.0 * (np.maximum(p - c1, 0.0) / (c2 - c3 * p)) ** (1.0 / m1)


def nits_to_pq(nits: np.ndarray) -> np.ndarray:
    """PQ's inverse EOTF: cd/m2 -> signal in [0, 1]."""
    m1, m2, c1, c2, c3 = _PQ
    y = (np.clip(nits, 0.0, 10000.0) / 10000.0) ** m1
    return ((c1 + c2 * y) / (1.0 + c3 * y)) ** m2


def hlg_to_nits(signal: np.ndarray, peak: float = DEFAULT_PEAK) -> np.ndarray:
    """HLG's inverse OETF then OOTF: signal [..., 3] in [0, 1] (BT.2020 R'G'B') -> display light in cd/m2
    on a `peak` cd/m2 display."""
    a, b, c = _HLG
    signal = np.clip(signal, 0.0, 1.0)
    scene = np.where(signal <= 0.5, signal**2 / 3.0, (np.exp((signal - c) / a) + b) / 12.0)
    luma = scene @ np.array([0.2627, 0.6780, 0.0593], np.float32)
    return peak * scene * (np.maximum(luma, 1e-12) ** (HLG_SYSTEM_GAMMA - 1.0))[..., None]


def eetf(nits: np.ndarray, peak: float, target: float = REFERENCE_WHITE) -> np.ndarray:
    """ITU-R BT.2390's EETF (black at 0): display light from a master reaching `peak` cd/m2 mapped onto
    a display reaching `target`, in PQ space: unchanged below the knee, a Hermite roll-off above it."""
    if peak <= target:
        return np.minimum(nits, target)
    top, reach = nits_to_pq(np.float32(peak)), nits_to_pq(np.float32(target))
    e = np.minimum(nits_to_pq(nits) / top, 1.0)
    most = reach / top
    knee = 1.5 * most - 0.5
    t = (e - knee) / (1.0 - knee)
    rolled = (
        (2 * t**3 - 3 * t**2 + 1) * knee
        + (t**3 - 2 * t**2 + t) * (1.0 - knee)
        + (-2 * t**3 + 3 * t**2) * most
    )
    return pq_to_nits(np.where(e < knee, e, rolled) * top)


@dataclass(frozen=True)
class Hdr:
    """An HDR clip's transfer ("PQ" or "HLG"), whether its primaries are BT.2020, and the peak (cd/m2)
    the tone map starts from, with where that figure came from."""

    transfer: str
    bt2020: bool
    peak: float
    peak_from: str

    def describe(self) -> str:
        primaries = "BT.2020" if self.bt2020 else "BT.709"
        return (
            f"HDR ({self.transfer}, {primaries}, peak {self.peak:.0f} cd/m2 from {self.peak_from}): tone-mapped to "
            f"SDR BT.709 (BT.2390, reference white {REFERENCE_WHITE:.0f} cd/m2 as SDR white); the edit is SDR"
        )


@dataclass(frozen=True)
class Picture:
    """How the frames of one video stream become RGB: their coded size, sample aspect ratio and HDR
    transfer (None: SDR). `size` is what they show (before the display matrix turns them)."""

    coded: tuple[int, int]
    sample_aspect: Fraction = Fraction(1)
    hdr: Hdr | None = None

    @property
    def size(self) -> tuple[int, int]:
        width, height = self.coded
        return max(1, round(width * self.sample_aspect)), height

    def notes(self) -> list[str]:
        """What is done to the frames beyond FFmpeg's plain conversion, in words (empty when nothing)."""
        notes = [] if self.hdr is None else [self.hdr.describe()]
        if self.sample_aspect != 1:
            width, height = self.coded
            shown = self.size
            notes.append(
                f"non-square pixels ({self.sample_aspect.numerator}:{self.sample_aspect.denominator}): "
                f"{width}x{height} coded, resampled to {shown[0]}x{shown[1]} as shown"
            )
        return notes

    def rgb(self, frame) -> np.ndarray:
        """The frame (a PyAV VideoFrame of this stream) as uint8 RGB [H, W, 3] at `size`."""
        width, height = self.size
        if self.hdr is None:
            return frame.to_ndarray(format="rgb24", width=width, height=height)
        matrix = int(frame.colorspace)
        matrix = MATRIX_BT2020_NCL if matrix == MATRIX_UNSPECIFIED else matrix
        coded = frame.reformat(
            width=width,
            height=height,
            format="rgb48le",
            src_colorspace=matrix,
            src_color_range=frame.color_range,
        )
        signal = coded.to_ndarray().astype(np.float32) / 65535.0
        light = pq_to_nits(signal) if self.hdr.transfer == "PQ" else hlg_to_nits(signal, self.hdr.peak)
        if self.hdr.bt2020:
            light = light @ BT2020_TO_BT709.T
        light = np.maximum(light, 0.0)
        brightest = light.max(axis=-1, keepdims=True)
        mapped = eetf(brightest, self.hdr.peak)
        sdr = light * (mapped / np.maximum(brightest, 1e-6)) / REFERENCE_WHITE
        return np.round(np.clip(sdr, 0.0, 1.0) ** (1.0 / SDR_GAMMA) * 255.0).astype(np.uint8)


def picture_of(stream, frame) -> Picture:
    """The Picture of a video stream, from the stream and its first decoded frame (colour tags and the
    HDR side data travel with frames)."""
    coded = (frame.width, frame.height)
    aspect = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    aspect = Fraction(aspect) if aspect else Fraction(1)
    transfer = TRANSFERS.get(int(getattr(frame, "color_trc", 0) or 0))
    if transfer is None:
        return Picture(coded, aspect)
    peak, source = _peak(frame)
    if peak is None:
        peak, source = DEFAULT_PEAK, "the default" if transfer == "PQ" else "HLG's nominal display"
    bt2020 = int(getattr(frame, "color_primaries", PRIMARIES_UNSPECIFIED)) in (
        PRIMARIES_BT2020,
        PRIMARIES_UNSPECIFIED,
    )
    return Picture(coded, aspect, Hdr(transfer, bt2020, peak, source))


def _peak(frame) -> tuple[float | None, str]:
    """The frame's peak light from its side data: MaxCLL, else the mastering display's peak."""
    found = {getattr(data.type, "name", str(data.type)): bytes(memoryview(data)) for data in frame.side_data}
    level = found.get("CONTENT_LIGHT_LEVEL")
    if level is not None and len(level) >= 4:
        (max_cll,) = struct.unpack_from("<I", level)
        if max_cll > 0:
            return float(max_cll), "its MaxCLL"
    mastering = found.get("MASTERING_DISPLAY_METADATA")
    if mastering is not None and len(mastering) >= 88:
        numerator, denominator = struct.unpack_from("<ii", mastering, 72)  # max_luminance
        (has_luminance,) = struct.unpack_from("<i", mastering, 84)
        if has_luminance and denominator > 0 and numerator > 0:
            return numerator / denominator, "its mastering display"
    return None, ""
