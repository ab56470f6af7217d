"""Edit masks (masks/): latent blend weights, face regions from landmarks, a face followed through a clip;
and the source blend of the sampler (editing/blending.py). Pure: no ComfyUI."""

import numpy as np
import pytest
import torch
from comfyui_diffferv.editing.blending import SourceBlend
from comfyui_diffferv.masks.latent import check_masks, feather, latent_masks
from comfyui_diffferv.masks.regions import region_masks, region_polygon
from comfyui_diffferv.masks.tracking import CARRIED, DETECTED, FrameFaces, pick_face, sample_flow, track_face


def face_landmarks(centre=(0.0, 0.0), scale=1.0) -> np.ndarray:
    """A plausible 68-point face (iBUG layout) around `centre`: jaw arc, brows, nose, eyes, mouth; eye
    distance about 40 px at scale 1."""
    jaw_angle = np.linspace(np.pi * 0.05, np.pi * 0.95, 17)
    jaw = np.stack([-50 * np.cos(jaw_angle), 10 + 45 * np.sin(jaw_angle)], 1)
    brows = np.stack([np.linspace(-40, 40, 10), np.full(10, -30.0)], 1)
    nose = np.stack([np.zeros(9), np.linspace(-20, 10, 9)], 1)
    eyes = np.concatenate([np.stack([np.linspace(-30, -10, 6), np.full(6, -15.0)], 1),
                           np.stack([np.linspace(10, 30, 6), np.full(6, -15.0)], 1)])  # fmt: skip
    mouth = np.stack([np.linspace(-20, 20, 20), 30 + 3 * np.sin(np.linspace(0, 2 * np.pi, 20))], 1)
    points = np.concatenate([jaw, brows, nose, eyes, mouth]) * scale + np.asarray(centre)
    return points.astype(np.float32)


def faces_at(*centres, scale=1.0) -> FrameFaces:
    landmarks = np.stack([face_landmarks(c, scale) for c in centres]) if centres else np.zeros((0, 68, 2))
    boxes = np.concatenate([landmarks.min(1), landmarks.max(1)], 1) if centres else np.zeros((0, 4))
    return FrameFaces(boxes.astype(np.float32), landmarks.astype(np.float32))


def shift_flows(count: int, size: tuple[int, int], velocity: tuple[float, float]):
    """Exact flows of a clip whose content moves by `velocity` px per frame: (forward, backward) per pair."""
    forward = torch.empty(*size, 2)
    forward[..., 0], forward[..., 1] = velocity
    for _ in range(count - 1):
        yield forward, -forward


# ---------------------------------------------------------------------------------------------- latent


def test_latent_masks_are_the_cell_means_of_the_pixel_masks():
    generator = torch.Generator().manual_seed(0)
    masks = (torch.rand(3, 64, 96, generator=generator) > 0.5).float()
    weights = latent_masks(masks, 3, (8, 12))
    reference = torch.empty(3, 1, 8, 12)
    for f in range(3):
        for row in range(8):
            for col in range(12):
                reference[f, 0, row, col] = masks[f, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8].mean()
    torch.testing.assert_close(weights, reference)


def test_one_mask_serves_every_frame_and_feathering_softens_only_the_edge():
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1
    weights = latent_masks(mask, 5, (8, 8), feather_px=8)
    assert weights.shape == (5, 1, 8, 8) and torch.equal(weights[0], weights[4])
    soft = feather(mask, 8)[0]
    assert soft[32, 32] > 0.99 and soft[2, 2] < 0.01  # deep inside and far outside unchanged
    assert 0.3 < soft[32, 16] < 0.7  # the edge is half-way
    assert torch.equal(feather(mask, 0), mask)


def test_masks_that_do_not_fit_the_clip_are_refused_by_name():
    check_masks(torch.zeros(1, 64, 64), 4, (64, 64))
    check_masks(torch.zeros(4, 64, 64), 4, (64, 64))
    with pytest.raises(ValueError, match=r"mask: 3 masks for a clip of 4 frames"):
        check_masks(torch.zeros(3, 64, 64), 4, (64, 64))
    with pytest.raises(ValueError, match=r"mask: the mask is 32x64 px and the frames are 64x64"):
        check_masks(torch.zeros(1, 64, 32), 4, (64, 64))


# ---------------------------------------------------------------------------------------------- blend


def test_source_blend_keeps_the_source_outside_and_the_edit_inside():
    steps, frames = 4, 2
    latents = torch.randn(steps + 1, frames, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    weights = torch.zeros(frames, 1, 8, 8)
    weights[..., :, 4:] = 1
    weights[..., :, 3] = 0.25
    blend = SourceBlend(latents, weights)
    x = torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    for step in range(steps):
        out = blend(step, x)
        source = latents[steps - 1 - step]
        assert torch.equal(out[..., :3], source[..., :3])
        assert torch.equal(out[..., 4:], x[..., 4:])
        torch.testing.assert_close(out[..., 3], 0.75 * source[..., 3] + 0.25 * x[..., 3])
    assert torch.equal(blend(steps - 1, x)[..., :3], latents[0][..., :3])  # the last step ends on the source


# ---------------------------------------------------------------------------------------------- regions


def test_face_region_is_the_landmark_hull_and_face_hair_reaches_above_the_brows():
    landmarks = face_landmarks((64, 140))
    face = region_masks(landmarks[None], np.array([True]), (260, 128), "face")[0]
    hair = region_masks(landmarks[None], np.array([True]), (260, 128), "face+hair")[0]
    grown = region_masks(landmarks[None], np.array([True]), (260, 128), "face", grow_px=6)[0]
    assert torch.all(hair >= face) and torch.all(grown >= face)
    rows = torch.nonzero(face.sum(1)).flatten()
    hair_rows = torch.nonzero(hair.sum(1)).flatten()
    assert rows.min() == pytest.approx(140 - 30, abs=1)  # the brows are the top of the face hull
    chin = 140 + 55
    assert hair_rows.min() == pytest.approx(rows.min() - 0.8 * (chin - rows.min()), abs=2)  # up to the crown
    assert hair_rows.max() == rows.max()
    assert grown.sum() > face.sum() + 6 * 2 * (rows.max() - rows.min())  # grown on every side
    polygon = region_polygon(landmarks, "face")
    assert polygon.shape[1] == 2 and len(polygon) >= 8
    with pytest.raises(ValueError, match="region: 'ears' is not one of face, face\\+hair"):
        region_polygon(landmarks, "ears")


def test_frames_without_the_face_get_an_empty_mask():
    landmarks = np.stack([face_landmarks((64, 64))] * 2)
    masks = region_masks(landmarks, np.array([True, False]), (128, 128), "face")
    assert masks[0].sum() > 0 and masks[1].sum() == 0


# ---------------------------------------------------------------------------------------------- tracking


def test_pick_face_by_size_or_from_the_left():
    faces = faces_at((200, 100), (60, 100), (120, 100), scale=1.0)
    big = FrameFaces(faces.boxes.copy(), faces.landmarks.copy())
    big.boxes[2] = [60, 40, 200, 200]  # the middle face is the largest
    assert pick_face(big, "largest", 0) == 2
    assert [pick_face(faces, "left-to-right", i) for i in range(3)] == [1, 2, 0]
    assert pick_face(faces, "left-to-right", 3) is None
    assert pick_face(FrameFaces.none(), "largest", 0) is None


def test_sample_flow_is_bilinear():
    flow = torch.zeros(4, 4, 2)
    flow[:, :, 0] = torch.arange(4.0)[None, :]  # dx = x
    flow[:, :, 1] = torch.arange(4.0)[:, None] * 10  # dy = 10 y
    moved = sample_flow(flow, np.array([[1.5, 2.25], [0.0, 0.0]], np.float32))
    np.testing.assert_allclose(moved, [[1.5, 22.5], [0.0, 0.0]], atol=1e-4)


def test_track_follows_the_face_through_missed_detections_and_smooths_jitter():
    frames, velocity = 12, (3.0, 1.0)
    rng = np.random.default_rng(0)
    truth = [face_landmarks((100 + 3 * t, 90 + t)) for t in range(frames)]
    detections = []
    for t in range(frames):
        if t in (4, 5):  # the detector misses the face twice
            detections.append(FrameFaces.none())
            continue
        noisy = truth[t] + rng.normal(0, 1.5, truth[t].shape).astype(np.float32)
        detections.append(FrameFaces(np.array([[0, 0, 1, 1]], np.float32), noisy[None]))
    track = track_face(detections, shift_flows(frames, (200, 240), velocity))
    assert track.present.all()
    assert list(track.state[4:6]) == [CARRIED, CARRIED] and track.state[6] == DETECTED
    errors = np.array([np.abs(track.landmarks[t] - truth[t]).mean() for t in range(frames)])
    raw = np.array(
        [np.abs(d.landmarks[0] - truth[t]).mean() for t, d in enumerate(detections) if len(d.boxes)]
    )
    assert errors[1:].mean() < 0.8 * raw.mean()  # fused with the flow: less jitter than the detector


def test_track_keeps_its_face_when_another_face_is_listed_first_and_fills_frames_before_it():
    frames = 6
    detections = [FrameFaces.none()]  # frame 0: not found; filled backwards from frame 1
    for t in range(1, frames):
        ours, theirs = (60 + 2 * t, 80), (180 - 2 * t, 80)
        detections.append(faces_at(theirs, ours) if t % 2 else faces_at(ours, theirs))
    flow = torch.zeros(160, 240, 2)
    flow[:, :120, 0], flow[:, 120:, 0] = 2.0, -2.0  # the left face moves right, the right one left
    track = track_face(detections, ((flow, -flow) for _ in range(frames - 1)), "left-to-right", 0)
    centres = track.landmarks.mean(1)[:, 0]
    np.testing.assert_allclose(centres, [60 + 2 * t for t in range(frames)], atol=0.5)
    assert track.state[0] == CARRIED and (track.state[1:] == DETECTED).all()
