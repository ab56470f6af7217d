"""The edit metrics (metrics/) against straightforward per-pixel and per-pair references, and the report's
forms (JSON, text, plot)."""

import json
import math

import numpy as np
import pytest
import torch
from comfyui_diffferv.flow.backends import DISFlow
from comfyui_diffferv.flow.source_flow import SourceFlow
from comfyui_diffferv.flow.trajectories import build_trajectories, compute_source_flow
from comfyui_diffferv.metrics import identity as ids
from comfyui_diffferv.metrics.image_quality import PSNR_CAP_DB, psnr, ssim
from comfyui_diffferv.metrics.plot import PANEL_HEIGHT, WIDTH, render_report
from comfyui_diffferv.metrics.report import measure_edit, report_steps
from comfyui_diffferv.metrics.warping import warping_errors
from flow_clips import demo_frames, shifted_clip


def random_frames(seed: int, shape=(2, 17, 23, 3)) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape, dtype=np.float32))


# ---------------------------------------------------------------------------------------------- PSNR, SSIM


def naive_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of one frame [H, W, C] by its definition: for every channel and every position whose 11 x 11
    window lies inside the frame, Gaussian-weighted means, variances and covariance of that window."""
    taps = np.exp(-(np.arange(-5, 6) ** 2) / (2 * 1.5**2))
    weights = np.outer(taps, taps) / np.outer(taps, taps).sum()
    c1, c2 = 0.01**2, 0.03**2
    h, w, channels = x.shape
    values = []
    for c in range(channels):
        for i in range(5, h - 5):
            for j in range(5, w - 5):
                a = x[i - 5 : i + 6, j - 5 : j + 6, c].astype(np.float64)
                b = y[i - 5 : i + 6, j - 5 : j + 6, c].astype(np.float64)
                ma, mb = (weights * a).sum(), (weights * b).sum()
                va, vb = (weights * (a - ma) ** 2).sum(), (weights * (b - mb) ** 2).sum()
                cov = (weights * (a - ma) * (b - mb)).sum()
                values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_its_definition():
    x = random_frames(0)
    y = (x + 0.2 * random_frames(1) - 0.1).clamp(0, 1)
    got = ssim(x, y)
    expected = [naive_ssim(a, b) for a, b in zip(x.numpy(), y.numpy(), strict=True)]
    assert got.shape == (2,)
    assert got.tolist() == pytest.approx(expected, abs=2e-5)
    assert ssim(x, x).tolist() == [1.0, 1.0]


def test_ssim_refuses_frames_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 11 px"):
        ssim(torch.zeros(1, 10, 40, 3), torch.zeros(1, 10, 40, 3))


def test_psnr_is_ten_log_of_the_inverse_mse_capped_for_identical_frames():
    x, y = random_frames(2), random_frames(3)
    expected = [
        10 * math.log10(1 / np.mean((a.astype(np.float64) - b) ** 2))
        for a, b in zip(x.numpy(), y.numpy(), strict=True)
    ]
    assert psnr(x, y).tolist() == pytest.approx(expected, rel=1e-6)
    assert psnr(x, x).tolist() == [PSNR_CAP_DB, PSNR_CAP_DB]


# ----------------------------------------------------------------------------------------- warping error


def naive_warping_error(frames: np.ndarray, forward: np.ndarray, reliable: np.ndarray) -> list[float]:
    """Per pair, pixel by pixel: |frame f (x) - frame f+1 sampled at x + flow(x)|, averaged over RGB and the
    reliable pixels, x 255. Bilinear sampling; neighbours outside the frame are the nearest border pixel."""
    _, h, w, _ = frames.shape
    out = []
    for f in range(len(forward)):
        total, count = 0.0, 0
        for y in range(h):
            for x in range(w):
                if not reliable[f, y, x]:
                    continue
                sx, sy = x + float(forward[f, y, x, 0]), y + float(forward[f, y, x, 1])
                x0, y0 = math.floor(sx), math.floor(sy)
                ax, ay = sx - x0, sy - y0

                def pixel(yy, xx, f=f):
                    return frames[f + 1, min(max(yy, 0), h - 1), min(max(xx, 0), w - 1)].astype(np.float64)

                sample = (
                    (1 - ax) * (1 - ay) * pixel(y0, x0)
                    + ax * (1 - ay) * pixel(y0, x0 + 1)
                    + (1 - ax) * ay * pixel(y0 + 1, x0)
                    + ax * ay * pixel(y0 + 1, x0 + 1)
                )
                total += np.abs(frames[f, y, x] - sample).mean()
                count += 1
        out.append(255 * total / count if count else math.nan)
    return out


def test_warping_error_matches_a_per_pixel_loop():
    rng = np.random.default_rng(7)
    frames = random_frames(4, (3, 9, 13, 3))
    forward = rng.normal(0, 1.5, (2, 9, 13, 2)).astype(np.float16)
    reliable = rng.random((2, 9, 13)) > 0.3
    reliable[1] = False  # a pair without a reliable pixel has no error
    flow = SourceFlow(torch.from_numpy(forward), torch.from_numpy(reliable), "test", 1.0)
    got = warping_errors([frames], flow)
    expected = naive_warping_error(frames.numpy(), forward.astype(np.float32), reliable)
    assert got.shape == (1, 2)
    assert got[0, 0].item() == pytest.approx(expected[0], abs=1e-3)
    assert math.isnan(got[0, 1].item()) and math.isnan(expected[1])


def test_warping_error_of_a_clip_moving_as_its_flow_says_is_near_zero_and_shuffling_raises_it():
    clip = shifted_clip(6, (96, 96), (2, 1), (80, 80))
    flow = compute_source_flow(clip, DISFlow())
    shuffled = clip[torch.tensor([3, 0, 5, 1, 4, 2])]
    errors = warping_errors([clip, shuffled], flow)
    assert errors.shape == (2, 5)
    assert float(errors[0].max()) < 1.5  # grey levels: DIS finds the whole-pixel shift
    assert float(errors[1].min()) > 4 * float(errors[0].max())


def test_warping_error_refuses_a_clip_of_another_size():
    flow = compute_source_flow(random_frames(5, (3, 16, 16, 3)), DISFlow())
    with pytest.raises(ValueError, match="measure with the flow of the same source frames"):
        warping_errors([random_frames(6, (3, 16, 24, 3))], flow)


def test_trajectories_keep_exactly_the_flow_that_compute_source_flow_gives():
    frames = demo_frames(4, 128)
    kept = build_trajectories(frames, DISFlow(), threshold=1.0).flow
    alone = compute_source_flow(frames, DISFlow(), threshold=1.0)
    assert (kept.backend, kept.threshold, kept.frames, kept.image_size) == ("dis", 1.0, 4, (128, 128))
    assert kept.forward.dtype == torch.float16 and kept.forward.shape == (3, 128, 128, 2)
    assert torch.equal(kept.forward, alone.forward) and torch.equal(kept.reliable, alone.reliable)
    assert 0.5 < float(kept.reliable.float().mean()) <= 1.0


# ---------------------------------------------------------------------------------------------- identity


def test_identity_distances_match_loops_and_skip_frames_without_a_face():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    a[2] = np.nan  # no face in frame 2 of the first clip
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)

    def dist(u, v):
        return float(np.linalg.norm(u - v))

    paired = ids.paired_distances(ta, tb).numpy()
    assert np.isnan(paired[2]) and paired[0] == pytest.approx(dist(a[0], b[0]))
    local = ids.consecutive_distances(ta).numpy()
    assert np.isnan(local[1]) and np.isnan(local[2])
    assert local[[0, 3, 4]] == pytest.approx([dist(a[i], a[i + 1]) for i in (0, 3, 4)])
    per_frame, overall = ids.global_distances(ta)
    faces = [i for i in range(6) if i != 2]
    pairs = [dist(a[i], a[j]) for i in faces for j in faces if i < j]
    assert overall == pytest.approx(np.mean(pairs))
    assert per_frame[0].item() == pytest.approx(np.mean([dist(a[0], a[j]) for j in faces if j != 0]))
    assert math.isnan(per_frame[2].item())
    assert math.isnan(ids.global_distances(torch.full((3, 4), math.nan))[1])


# ------------------------------------------------------------------------------------------------ report


def test_report_without_identity_as_json_text_and_plot():
    source = demo_frames(5, 96)
    edited = (source * 0.9 + 0.05).clamp(0, 1)
    steps = []
    report = measure_edit(source, edited, identity_note="identity is off", on_step=steps.append)
    assert steps == list(range(1, report_steps(5, True, False) + 1))
    data = json.loads(report.to_json())
    assert data["frames"] == 5 and (data["width"], data["height"]) == (96, 96)
    assert len(data["per_frame"]["psnr_db"]) == 5 and len(data["per_frame"]["warping_error_output"]) == 4
    assert data["clip"]["psnr_db"] == pytest.approx(float(psnr(source, edited).mean()), abs=1e-5)
    assert data["clip"]["identity"] is None and data["notes"]["identity"] == "identity is off"
    assert "computed from the source" in data["notes"]["flow"]
    text = report.text()
    assert (
        f"PSNR {data['clip']['psnr_db']:.2f} dB" in text and "Identity: not measured. identity is off" in text
    )
    plot = render_report(report)
    assert plot.shape == (4 * PANEL_HEIGHT, WIDTH, 3) and plot.dtype == np.uint8
    assert len(np.unique(plot.reshape(-1, 3), axis=0)) > 10  # curves and text were drawn


def test_report_of_one_frame_has_no_temporal_numbers():
    frame = demo_frames(1, 64)
    data = measure_edit(frame, frame).to_dict()
    assert data["clip"]["warping_error"] == {"output": None, "source": None, "output_over_source": None}
    assert data["per_frame"]["warping_error_output"] == [] and data["clip"]["ssim"] == 1.0


@pytest.mark.parametrize(
    "edited, message",
    [
        (torch.zeros(3, 64, 64, 3), "source has 4 frames, output 3"),
        (torch.zeros(4, 64, 32, 3), "compares pixel by pixel"),
    ],
)
def test_report_refuses_clips_that_cannot_be_compared(edited, message):
    with pytest.raises(ValueError, match=message):
        measure_edit(torch.zeros(4, 64, 64, 3), edited)
