"""Speed mode's core (keyframes/): keyframe selection, and the keyframes' edit carried along the flow to the
frames between them. Pure: no ComfyUI."""

import numpy as np
import pytest
import torch
from comfyui_diffferv.flow.backends import DISFlow
from comfyui_diffferv.keyframes.propagation import propagate_edit, warp
from comfyui_diffferv.keyframes.selection import Keyframes
from conftest import ROOT
from PIL import Image

VELOCITY = (2, 1)  # px per frame, (x, y)
MARK = (slice(100, 116), slice(90, 106))  # rows, cols of the mark in the content's own coordinates


class ExactShiftFlow:
    """The true flow of `moving_clip`: content moves by VELOCITY per frame, so from frame i to frame j
    every pixel moves by (j - i) * VELOCITY. Frames are told apart by a per-frame tag in pixel (0, 0)."""

    name = "exact"

    def compute(self, frames_a, frames_b):
        steps = torch.round((frames_b[:, 0, 0, 0] - frames_a[:, 0, 0, 0]) * 100)  # tag = t / 100
        flow = torch.empty(*frames_a.shape[:3], 2)
        flow[..., 0] = steps[:, None, None] * VELOCITY[0]
        flow[..., 1] = steps[:, None, None] * VELOCITY[1]
        return flow


def moving_clip(frames: int, size=(192, 256)) -> torch.Tensor:
    """The astronaut portrait moving by VELOCITY per frame; pixel (0, 0) holds the frame's tag t / 100."""
    portrait = torch.from_numpy(np.array(Image.open(ROOT / "tests" / "assets" / "astronaut_256.jpg"))).float()
    portrait = portrait / 255
    clip = torch.empty(frames, *size, 3)
    for t in range(frames):
        dx, dy = VELOCITY[0] * t, VELOCITY[1] * t
        clip[t] = portrait[40 - dy : 40 - dy + size[0], : size[1]].roll(dx, dims=1)
        clip[t, 0, 0, 0] = t / 100
    return clip


def with_mark(clip: torch.Tensor, frames) -> torch.Tensor:
    """The "edit": a red square painted on the content at MARK, moved with the content, on `frames`."""
    out = clip.clone()
    for t in frames:
        rows = slice(MARK[0].start + VELOCITY[1] * t, MARK[0].stop + VELOCITY[1] * t)
        cols = slice(MARK[1].start + VELOCITY[0] * t, MARK[1].stop + VELOCITY[0] * t)
        out[t, rows, cols] = torch.tensor([1.0, 0.0, 0.0])
    return out


def test_keyframes_are_every_kth_and_the_last():
    assert Keyframes.every(10, 4).indices == (0, 4, 8, 9)
    assert Keyframes.every(9, 4).indices == (0, 4, 8)
    assert Keyframes.every(3, 1).indices == (0, 1, 2)
    assert Keyframes.every(1, 4).indices == (0,)
    keys = Keyframes.every(10, 4)
    assert keys.segment(4) == (1, 1) and keys.segment(5) == (1, 2) and keys.segment(9) == (3, 3)
    with pytest.raises(ValueError, match="keyframe_every: 0 must be at least 1"):
        Keyframes.every(10, 0)


def test_warp_samples_where_the_flow_points():
    image = np.arange(5 * 6 * 3, dtype=np.float32).reshape(5, 6, 3)
    flow = np.zeros((5, 6, 2), np.float32)
    flow[..., 0] = 1.0  # every pixel shows the pixel to its right
    flow[..., 1] = 0.5
    out = warp(image, flow)
    expected = 0.5 * (
        image[:-1, 1:] + image[1:, 1:]
    )  # away from the far edges: the value at (x + 1, y + 0.5)
    np.testing.assert_allclose(out[:-1, :-1], expected, rtol=1e-5)


def test_the_mark_on_the_keyframes_lands_where_the_motion_puts_it_between_them():
    frames = 9
    clip = moving_clip(frames)
    keys = Keyframes.every(frames, 4)
    edited = with_mark(clip, keys.indices)[list(keys.indices)]
    out = propagate_edit(clip, edited, keys, ExactShiftFlow())
    truth = with_mark(clip, range(frames))
    for t in range(frames):
        error = (out[t] - truth[t]).abs()
        assert error.max() < 1e-4, f"frame {t}: max error {error.max():.4f}"


def test_with_estimated_flow_the_mark_moves_with_the_face():
    """The same with OpenCV DIS instead of the exact flow: the mark's centre within half a pixel."""
    frames = 9
    clip = moving_clip(frames)
    keys = Keyframes.every(frames, 4)
    out = propagate_edit(clip, with_mark(clip, keys.indices)[list(keys.indices)], keys, DISFlow())
    redness = (out - clip).abs().sum(-1)  # the change the edit made
    ys, xs = torch.meshgrid(torch.arange(clip.shape[1]), torch.arange(clip.shape[2]), indexing="ij")
    for t in range(frames):
        centre = torch.stack([(redness[t] * xs).sum(), (redness[t] * ys).sum()]) / redness[t].sum()
        expected = torch.tensor([97.5 + VELOCITY[0] * t, 107.5 + VELOCITY[1] * t])
        assert torch.linalg.norm(centre - expected) < 0.5, f"frame {t}: mark at {centre.tolist()}"


def test_an_unchanged_edit_leaves_every_frame_as_it_was():
    clip = moving_clip(6)
    keys = Keyframes.every(6, 4)
    out = propagate_edit(clip, clip[list(keys.indices)], keys, DISFlow())
    assert torch.equal(out, clip)


def test_a_pixel_hidden_in_one_keyframe_takes_the_other_ones_change():
    """Keyframe a's flow fails the forward-backward check everywhere (as under an occlusion): frames in
    between take keyframe b's change alone, whatever their time weight."""

    class BrokenTowardsFirst(ExactShiftFlow):
        def compute(self, frames_a, frames_b):
            flow = super().compute(frames_a, frames_b)
            towards_first = (frames_b[:, 0, 0, 0] == 0) | (frames_a[:, 0, 0, 0] == 0)
            flow[towards_first] += 5.0  # forward and backward no longer cancel
            return flow

    clip = moving_clip(5)
    keys = Keyframes.every(5, 4)
    edited = clip[list(keys.indices)].clone()
    edited[0] += 0.2  # keyframe 0 brighter, keyframe 4 unchanged
    out = propagate_edit(clip, edited.clamp(0, 1), keys, BrokenTowardsFirst())
    # keyframe 0's change never arrives (away from the right and bottom edges, whose pixels leave the frame
    # on their way to keyframe 4 and so are hidden in both keyframes)
    assert (out[1:4, :-4, :-8] - clip[1:4, :-4, :-8]).abs().max() < 1e-3


def test_mismatched_inputs_are_refused_by_name():
    clip = moving_clip(5)
    keys = Keyframes.every(5, 4)
    with pytest.raises(ValueError, match=r"edited: expected the 2 edited keyframes"):
        propagate_edit(clip, clip[:3], keys, DISFlow())
    with pytest.raises(ValueError, match=r"keyframes: they were picked from 6 frames, the source has 5"):
        propagate_edit(clip, clip[:2], Keyframes.every(6, 4), DISFlow())


def test_speed_mode_nodes_in_comfyui(comfy):
    """Select Keyframes -> (an edit of the keyframes) -> Propagate Keyframe Edit, run as ComfyUI runs nodes."""
    clip = moving_clip(7)
    (keyframe_images, keyframe_set), _ = comfy.run_node(
        "DiffFERV_SelectKeyframes", frames=clip, keyframe_every=3
    )
    assert keyframe_set.indices == (0, 3, 6) and torch.equal(keyframe_images, clip[[0, 3, 6]])
    edited = with_mark(clip, keyframe_set.indices)[list(keyframe_set.indices)]
    (frames,), _ = comfy.run_node(
        "DiffFERV_PropagateKeyframeEdit",
        source=clip,
        edited_keyframes=edited,
        keyframe_set=keyframe_set,
        backend="dis",
        consistency_threshold=1.0,
    )
    truth = with_mark(clip, range(7))
    assert frames.shape == clip.shape
    assert (frames - truth).abs().mean() < 2e-3  # DIS flow: the mark within a fraction of a pixel
