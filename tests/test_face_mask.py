"""Face Mask (DiffFERV): one face found, picked and followed through a clip with dlib's models and the
optical flow (masks/face_mask.py), and the node in ComfyUI. Needs the face models (tests/requirements.txt)."""

import numpy as np
import pytest
import torch
from comfyui_diffferv.faces.dlib_models import face_models
from comfyui_diffferv.flow.backends import DISFlow
from comfyui_diffferv.masks.face_mask import face_masks
from comfyui_diffferv.masks.tracking import FrameFaces, track_face
from comfyui_diffferv.video.decode import read_clip
from conftest import ROOT
from PIL import Image

PORTRAIT = ROOT / "tests" / "assets" / "astronaut_256.jpg"
VELOCITY = (3, 1)  # px per frame, (x, y)


def portrait() -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(PORTRAIT).convert("RGB"))).float() / 255


def shifted_portrait_clip(frames: int, size=(256, 320), offset=(0, 0)) -> torch.Tensor:
    """The portrait (240x240 of it) pasted on grey at offset + t * VELOCITY: a face of known motion."""
    face = portrait()[:240, :240]
    clip = torch.full((frames, *size, 3), 0.5)
    for t in range(frames):
        x, y = offset[0] + VELOCITY[0] * t, offset[1] + VELOCITY[1] * t
        clip[t, y : y + 240, x : x + 240] = face
    return clip


def centroids(masks: torch.Tensor) -> np.ndarray:
    """(x, y) centre of mass of each mask [F, H, W] -> [F, 2]."""
    weights = masks.sum((1, 2))
    ys, xs = torch.meshgrid(torch.arange(masks.shape[1]), torch.arange(masks.shape[2]), indexing="ij")
    return torch.stack([(masks * xs).sum((1, 2)) / weights, (masks * ys).sum((1, 2)) / weights], 1).numpy()


def test_the_mask_follows_a_face_moved_by_a_known_shift():
    frames = 12
    masks, track = face_masks(shifted_portrait_clip(frames), face_models(), DISFlow(), "face", grow_px=4)
    assert track.present.all()
    moved = centroids(masks) - centroids(masks)[:1]
    truth = np.arange(frames)[:, None] * np.array(VELOCITY)[None]
    error = np.linalg.norm(moved - truth, axis=1)
    print(f"\nmask centroid tracking error, px: mean {error.mean():.3f}, max {error.max():.3f}")
    assert error.mean() < 0.75 and error.max() < 1.5
    # the mask moves rigidly with the face: frame t is frame 0 shifted (up to its rasterised edge)
    first = masks[0]
    for t in (5, 11):
        dx, dy = VELOCITY[0] * t, VELOCITY[1] * t
        expected = torch.zeros_like(first)
        expected[dy:, dx:] = first[: first.shape[0] - dy, : first.shape[1] - dx]
        overlap = (masks[t] * expected).sum() / torch.maximum(masks[t], expected).sum()
        assert overlap > 0.93, f"frame {t}: IoU with the shifted first mask {overlap:.3f}"


def test_flow_fusion_steadies_the_mask_against_the_raw_detections():
    """The shifted face under camera noise (a new draw each frame): landmarks from the detector alone jitter
    about the true motion; fused with the flow they jitter less."""
    frames = 12
    noise = torch.randn(frames, 256, 320, 3, generator=torch.Generator().manual_seed(0)) * 0.04
    clip = (shifted_portrait_clip(frames) + noise).clamp(0, 1)
    models = face_models()
    _, track = face_masks(clip, models, DISFlow(), "face")
    pixels = (clip.numpy() * 255).round().astype(np.uint8)
    raw = np.stack([models.landmarks(frame, models.main_face(frame), 68) for frame in pixels])
    motion = np.arange(frames)[:, None, None] * np.array(VELOCITY)[None, None]  # [F, 1, 2]

    def jitter(landmarks):  # spread of each point about its own mean path along the true motion
        steady = landmarks - motion
        return np.linalg.norm(steady - steady.mean(0, keepdims=True), axis=-1).mean()

    raw_jitter, fused_jitter = jitter(raw), jitter(track.landmarks)
    print(
        f"\nlandmark jitter about the true motion, px: detector alone {raw_jitter:.3f}, fused with flow {fused_jitter:.3f}"
    )
    assert fused_jitter < 0.8 * raw_jitter


@pytest.fixture(scope="module")
def two_faces() -> torch.Tensor:
    """12 frames, 256x576: the demo clip's talking face on the left, the moving portrait on the right."""
    talking = read_clip(ROOT / "workflows" / "media" / "talking_face.mp4", 12).frames
    talking = torch.nn.functional.interpolate(talking.permute(0, 3, 1, 2), size=(256, 256), mode="area")
    clip = shifted_portrait_clip(12, size=(256, 576), offset=(290, 0))
    clip[:, :, :256] = talking.permute(0, 2, 3, 1)
    return clip


@pytest.mark.parametrize("index, side", [(0, "left"), (1, "right")])
def test_picking_a_face_from_the_left_masks_that_face_only(two_faces, index, side):
    masks, track = face_masks(two_faces, face_models(), DISFlow(), "face", rule="left-to-right", index=index)
    assert track.present.all()
    left, right = masks[..., :288].sum((1, 2)), masks[..., 288:].sum((1, 2))
    inside, outside = (left, right) if side == "left" else (right, left)
    assert (inside > 1000).all() and (outside == 0).all()


def test_no_such_face_leaves_the_track_empty():
    detections = [FrameFaces.none()] * 3
    flows = ((torch.zeros(8, 8, 2), torch.zeros(8, 8, 2)) for _ in range(2))
    assert not track_face(detections, flows).present.any()


def test_node_outputs_mask_frames_and_a_preview(comfy):
    clip = shifted_portrait_clip(4)
    (masks, preview), _ = comfy.run_node(
        "DiffFERV_FaceMask", frames=clip, region="face+hair", grow_px=6, pick="largest", face_index=0
    )
    assert masks.shape == clip.shape[:3] and preview.shape == clip.shape
    assert 0.02 < masks.mean() < 0.5  # the face and hair of a 240 px portrait on 320x256
    outside = masks == 0
    assert torch.all(preview[outside] <= clip[outside] * 0.5 + 1e-6)  # dimmed outside
    assert torch.equal(preview[masks == 1], clip[masks == 1])  # untouched inside


def test_node_says_which_face_is_missing(comfy):
    with pytest.raises(
        Exception,
        match=r"face_index: no face number 3 \(counted largest, from 0\) was found in any of the 2 frames \(at "
        r"most 1 in one frame\); give a number up to 0, or",
    ):
        comfy.run_node(
            "DiffFERV_FaceMask", frames=shifted_portrait_clip(2), region="face", grow_px=0, pick="largest",
            face_index=3,
        )  # fmt: skip


def test_node_says_when_no_frame_shows_a_face(comfy):
    """A clip without any face: the sentence says none was found in any frame and how many were searched
    (not "give a lower number", when there is none)."""
    sky = torch.linspace(0, 1, 96).view(1, 96, 1, 1).expand(3, 96, 128, 3).contiguous()
    with pytest.raises(Exception) as refused:
        comfy.run_node(
            "DiffFERV_FaceMask", frames=sky, region="face", grow_px=0, pick="largest", face_index=0
        )
    assert str(refused.value) == (
        "region: no face was found in any of the 3 frames searched; check that the faces are frontal and at "
        "least 40 px wide, or edit without a mask"
    )
