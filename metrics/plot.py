"""The edit report as a picture: per-frame curves in stacked panels, drawn with OpenCV (no plotting library).

Panels: PSNR, SSIM, warping error (output and source), identity distances (source -> output, TL-ID of
output and source, dlib's same-person threshold), or, without identity, the reason. Each panel's title
gives the clip's number; frames without a value (no face) break the curves.
"""

from __future__ import annotations

import textwrap

import cv2
import numpy as np
import torch

from ..faces.dlib_models import SAME_PERSON_DISTANCE
from .identity import clip_mean
from .report import EditReport

WIDTH, PANEL_HEIGHT = 960, 210
LEFT, RIGHT, TOP, BOTTOM = 78, 24, 40, 30
FONT = cv2.FONT_HERSHEY_SIMPLEX
BACKGROUND, AXIS, TEXT, GRID = (255, 255, 255), (90, 90, 90), (20, 20, 20), (228, 228, 228)
OUTPUT, SOURCE, SECOND, THRESHOLD = (214, 39, 40), (150, 150, 150), (31, 119, 180), (44, 160, 44)
"""Colours (RGB): output curves red, the source's grey, a second output curve blue, thresholds green."""


def render_report(report: EditReport) -> np.ndarray:
    """The plot as uint8 RGB [4 * PANEL_HEIGHT, WIDTH, 3]."""
    frames = report.frames
    pairs = np.arange(frames - 1) + 0.5  # pair (f, f + 1) is drawn between its frames
    at = np.arange(frames, dtype=np.float64)
    panels = [
        _panel(
            f"PSNR vs source: {clip_mean(report.psnr):.2f} dB", frames, [(at, report.psnr, OUTPUT, "output")]
        ),
        _panel(
            f"SSIM vs source: {clip_mean(report.ssim):.4f}", frames, [(at, report.ssim, OUTPUT, "output")]
        ),
        _panel(
            f"Warping error with the source's flow (grey levels): output {clip_mean(report.warping_output):.2f}, "
            f"source {clip_mean(report.warping_source):.2f}",
            frames,
            [
                (pairs, report.warping_source, SOURCE, "source"),
                (pairs, report.warping_output, OUTPUT, "output"),
            ],
        ),
    ]
    identity = report.identity
    if identity is None or not (identity.found_source.any() and identity.found_output.any()):
        panels.append(_message_panel("Identity: not measured. " + (report.identity_note or "")))
    else:
        panels.append(
            _panel(
                f"Identity distance: source->output {clip_mean(identity.source_to_output):.3f}, TL-ID output "
                f"{clip_mean(identity.tl_output):.3f}, source {clip_mean(identity.tl_source):.3f}",
                frames,
                [
                    (pairs, identity.tl_source, SOURCE, "TL-ID source"),
                    (pairs, identity.tl_output, SECOND, "TL-ID output"),
                    (at, identity.source_to_output, OUTPUT, "source->output"),
                ],
                threshold=(SAME_PERSON_DISTANCE, "same person below"),
            )
        )
    return np.concatenate(panels, axis=0)


def _canvas() -> np.ndarray:
    return np.full((PANEL_HEIGHT, WIDTH, 3), BACKGROUND, dtype=np.uint8)


def _text(image: np.ndarray, text: str, origin: tuple[int, int], color=TEXT, scale: float = 0.45) -> int:
    """Draws ``text``; returns its width in pixels."""
    cv2.putText(image, text, origin, FONT, scale, color, 1, cv2.LINE_AA)
    return cv2.getTextSize(text, FONT, scale, 1)[0][0]


def _message_panel(message: str) -> np.ndarray:
    image = _canvas()
    for row, line in enumerate(textwrap.wrap(message, 110)[:8]):
        _text(image, line, (LEFT // 2, TOP + 20 * row))
    return image


def _range(values: list[np.ndarray], threshold: float | None) -> tuple[float, float]:
    finite = np.concatenate(
        [v[np.isfinite(v)] for v in values] + [np.array([threshold] if threshold else [])]
    )
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    pad = (high - low) * 0.08 or max(abs(high) * 0.05, 1e-3)
    return (low - pad if low < 0 or low - pad >= 0 else 0.0), high + pad  # no negative axis for >= 0 data


def _panel(
    title: str,
    frames: int,
    curves: list[tuple[np.ndarray, torch.Tensor, tuple[int, int, int], str]],
    threshold: tuple[float, str] | None = None,
) -> np.ndarray:
    """One panel: curves (x in frames, values, colour, label) over frames 0..F-1."""
    image = _canvas()
    values = [curve[1].double().numpy() for curve in curves]
    low, high = _range(values, threshold[0] if threshold else None)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, PANEL_HEIGHT - BOTTOM
    span = max(frames - 1, 1)

    def to_pixels(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        px = x0 + (x1 - x0) * x / span
        py = y1 - (y1 - y0) * (y - low) / (high - low)
        return np.stack([px, py], axis=-1)

    for fraction in (0.0, 0.5, 1.0):  # horizontal grid with value labels
        y = round(y1 - (y1 - y0) * fraction)
        cv2.line(image, (x0, y), (x1, y), GRID, 1)
        _text(image, _short(low + (high - low) * fraction), (6, y + 4), AXIS, 0.4)
    for frame in _ticks(frames):
        x = round(x0 + (x1 - x0) * frame / span)
        cv2.line(image, (x, y1), (x, y1 + 4), AXIS, 1)
        _text(image, str(frame), (x - 6, y1 + 18), AXIS, 0.38)
    cv2.rectangle(image, (x0, y0), (x1, y1), AXIS, 1)
    if threshold is not None:
        y = round(float(to_pixels(np.zeros(1), np.array([threshold[0]]))[0, 1]))
        if y0 <= y <= y1:
            cv2.line(image, (x0, y), (x1, y), THRESHOLD, 1, cv2.LINE_AA)
            _text(image, f"{threshold[1]} {threshold[0]:g}", (x0 + 6, y - 5), THRESHOLD, 0.4)
    for (x, _, color, _), y in zip(curves, values, strict=True):
        _draw_curve(image, to_pixels(x.astype(np.float64), y), color)
    _text(image, title, (x0, 24), TEXT, 0.5)
    legend = x1
    for _, _, color, label in reversed(curves):
        legend -= cv2.getTextSize(label, FONT, 0.42, 1)[0][0] + 34
        cv2.line(image, (legend, y0 - 9), (legend + 22, y0 - 9), color, 2, cv2.LINE_AA)
        _text(image, label, (legend + 26, y0 - 5), color, 0.42)
    return image


def _draw_curve(image: np.ndarray, points: np.ndarray, color: tuple[int, int, int]) -> None:
    """Polylines through the finite points, broken where a value is missing; lone points as dots."""
    finite = np.isfinite(points).all(axis=1)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], finite.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        run = np.round(points[start:stop] * 16).astype(np.int32)  # 4 fractional bits (cv2 shift)
        if len(run) == 1:
            cv2.circle(image, tuple(run[0]), 3 * 16, color, -1, cv2.LINE_AA, shift=4)
        else:
            cv2.polylines(image, [run], False, color, 2, cv2.LINE_AA, shift=4)


def _ticks(frames: int) -> list[int]:
    """Frame numbers to label: every 1, 2, 5, 10, 20, 50, ... frames (at most 12 labels), and the last."""
    step = next(s * 10**e for e in range(8) for s in (1, 2, 5) if (frames - 1) / (s * 10**e) <= 12)
    ticks = list(range(0, frames, step))
    if frames - 1 - ticks[-1] >= step / 2:
        ticks.append(frames - 1)
    return ticks


def _short(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
