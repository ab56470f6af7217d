"""The edit report: every measure of an edit against its source, per frame and for the clip, as a dict /
JSON and as text.

``measure_edit`` computes it: PSNR, SSIM and MSE against the source (image_quality.py), the warping error
of output and source with the source's flow (warping.py), and, when face models are given, the identity
distances (identity.py) and the share of frames with a face found.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..faces.dlib_models import SAME_PERSON_DISTANCE, FaceModels, to_uint8
from ..flow.backends import DISFlow
from ..flow.consistency import CONSISTENCY_THRESHOLD
from ..flow.source_flow import SourceFlow
from ..flow.trajectories import compute_source_flow
from . import identity as ids
from .image_quality import mse, psnr_of, ssim
from .warping import warping_errors

DEFAULT_THRESHOLD = CONSISTENCY_THRESHOLD.default
"""Forward-backward tolerance (px) of the flow the report computes itself (Compute Flow Trajectories' default)."""


@dataclass(frozen=True)
class IdentityReport:
    """Identity distances (see identity.py); [F] or [F-1] float64 tensors, NaN where a face is missing."""

    source_to_output: torch.Tensor  # [F]
    tl_source: torch.Tensor  # [F-1]
    tl_output: torch.Tensor  # [F-1]
    tg_source: torch.Tensor  # [F] mean distance to the other frames
    tg_output: torch.Tensor  # [F]
    tg_source_clip: float
    tg_output_clip: float
    found_source: torch.Tensor  # [F] bool
    found_output: torch.Tensor  # [F] bool


@dataclass(frozen=True)
class EditReport:
    """The numbers of one edit; tensors are float64 per frame ([F]) or per pair ([F-1])."""

    frames: int
    height: int
    width: int
    mse: torch.Tensor
    psnr: torch.Tensor
    ssim: torch.Tensor
    warping_source: torch.Tensor
    warping_output: torch.Tensor
    flow_note: str
    identity: IdentityReport | None
    identity_note: str | None
    seconds: float

    def clip(self) -> dict:
        """The clip's numbers (means over frames; NaN -> None)."""
        warp_source, warp_output = ids.clip_mean(self.warping_source), ids.clip_mean(self.warping_output)
        out = {
            "psnr_db": _number(ids.clip_mean(self.psnr)),
            "ssim": _number(ids.clip_mean(self.ssim)),
            "mse": _number(ids.clip_mean(self.mse)),
            "warping_error": {
                "output": _number(warp_output),
                "source": _number(warp_source),
                "output_over_source": _number(warp_output / warp_source if warp_source > 0 else math.nan),
            },
            "identity": None,
        }
        if self.identity is not None:
            i = self.identity
            out["identity"] = {
                "source_to_output": _number(ids.clip_mean(i.source_to_output)),
                "tl_id": {
                    "output": _number(ids.clip_mean(i.tl_output)),
                    "source": _number(ids.clip_mean(i.tl_source)),
                },
                "tg_id": {"output": _number(i.tg_output_clip), "source": _number(i.tg_source_clip)},
                "face_found": {
                    "output": float(i.found_output.double().mean()),
                    "source": float(i.found_source.double().mean()),
                },
            }
        return out

    def per_frame(self) -> dict:
        """Every curve: per frame [F] or per consecutive pair [F-1] (NaN -> None)."""
        out = {
            "psnr_db": _numbers(self.psnr),
            "ssim": _numbers(self.ssim),
            "mse": _numbers(self.mse),
            "warping_error_output": _numbers(self.warping_output),
            "warping_error_source": _numbers(self.warping_source),
        }
        if self.identity is not None:
            i = self.identity
            out |= {
                "identity_source_to_output": _numbers(i.source_to_output),
                "tl_id_output": _numbers(i.tl_output),
                "tl_id_source": _numbers(i.tl_source),
                "tg_id_output": _numbers(i.tg_output),
                "tg_id_source": _numbers(i.tg_source),
                "face_found_output": [bool(v) for v in i.found_output],
                "face_found_source": [bool(v) for v in i.found_source],
            }
        return out

    def to_dict(self) -> dict:
        return {
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "clip": self.clip(),
            "per_frame": self.per_frame(),
            "notes": {
                "flow": self.flow_note,
                "identity": self.identity_note,
                "units": "PSNR in dB; SSIM 0..1; MSE of 0..1 values; warping error in 0..255 grey levels "
                "(per consecutive pair); identity: L2 distance of dlib's 128-d face descriptors (same person "
                f"below {SAME_PERSON_DISTANCE}); TL-ID per consecutive pair, TG-ID per frame = mean distance to "
                "the other frames",
            },
            "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def text(self) -> str:
        """A few lines for a person: the clip's numbers and what they are measured with."""
        clip = self.clip()
        warp = clip["warping_error"]
        lines = [
            f"Edit report: {self.frames} frames, {self.width}x{self.height} ({self.seconds:.1f} s)",
            f"PSNR {_fmt(clip['psnr_db'], 2)} dB   SSIM {_fmt(clip['ssim'], 4)}   MSE {_fmt(clip['mse'], 6)}",
            f"Warping error (grey levels; {self.flow_note}): output {_fmt(warp['output'], 2)}, "
            f"source {_fmt(warp['source'], 2)} (x{_fmt(warp['output_over_source'], 2)})",
        ]
        identity = clip["identity"]
        if identity is None:
            lines.append(f"Identity: not measured. {self.identity_note or ''}".rstrip())
            return "\n".join(lines)
        found = identity["face_found"]
        lines += [
            f"Identity (dlib face descriptor distance; same person below {SAME_PERSON_DISTANCE}):",
            f"  source -> output {_fmt(identity['source_to_output'], 3)}",
            f"  TL-ID (consecutive frames): output {_fmt(identity['tl_id']['output'], 3)}, "
            f"source {_fmt(identity['tl_id']['source'], 3)}",
            f"  TG-ID (all pairs of frames): output {_fmt(identity['tg_id']['output'], 3)}, "
            f"source {_fmt(identity['tg_id']['source'], 3)}",
            f"  face found in {found['output']:.0%} of output frames, {found['source']:.0%} of source frames",
        ]
        if self.identity_note:
            lines.append(f"  {self.identity_note}")
        return "\n".join(lines)


def _number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _numbers(values: torch.Tensor) -> list[float | None]:
    return [_number(v) for v in values.tolist()]


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def check_clips(source: torch.Tensor, output: torch.Tensor) -> None:
    """Refuses clips that cannot be compared frame by frame, saying what to connect instead."""
    if source.ndim != 4 or output.ndim != 4:
        raise ValueError(
            f"source and output must be IMAGE batches [frames, height, width, channels]; got shapes "
            f"{tuple(source.shape)} and {tuple(output.shape)}"
        )
    if source.shape[0] != output.shape[0]:
        raise ValueError(
            f"source has {source.shape[0]} frames, output {output.shape[0]}: connect the frames the edit was "
            "made from (the same Load Video output that was encoded) and the decoded edit of all of them"
        )
    if source.shape[1:3] != output.shape[1:3]:
        raise ValueError(
            f"source frames are {source.shape[2]}x{source.shape[1]}, output frames {output.shape[2]}x"
            f"{output.shape[1]} (width x height): the report compares pixel by pixel; connect frames of one size"
        )
    if min(source.shape[1:3]) < 11:
        raise ValueError(
            f"frames of {source.shape[2]}x{source.shape[1]} are too small: SSIM needs 11 px a side"
        )


def report_steps(frames: int, compute_flow: bool, identity: bool) -> int:
    """Progress steps of ``measure_edit``: flow pairs (when computed), warping pairs, identity frames x 2."""
    return (frames - 1) * (1 + compute_flow) + 2 * frames * identity + 1


def measure_edit(
    source: torch.Tensor,
    output: torch.Tensor,
    flow: SourceFlow | None = None,
    face_models: FaceModels | None = None,
    identity_note: str | None = None,
    on_step: Callable[[int], None] | None = None,
    device: torch.device | str = "cpu",
) -> EditReport:
    """Measure ``output`` against ``source``, both IMAGE [F, H, W, C] float in 0..1 of one size.

    ``flow``: the source's flow (``TrajectorySet.flow``); None computes it with OpenCV DIS and a 1 px
    forward-backward check. ``face_models``: None skips identity, and ``identity_note`` says why.
    ``on_step(done)`` counts ``report_steps`` steps; ``device``: where the face ResNet runs. Time (a
    2-core CPU): image quality and warping error about 10 ms per 512 px frame; identity a face detection
    (about 25 ms, on a copy of at most 384 px) and a ResNet pass (8-12 ms a face on one core) per frame
    of each clip. Memory: a uint8 copy of both clips for the face models, a few frames besides, the flow.
    """
    start = time.perf_counter()
    check_clips(source, output)
    frames, height, width, _ = source.shape
    source, output = source[..., :3], output[..., :3]
    done = 0

    def step(count: int = 1) -> None:
        nonlocal done
        done += count
        if on_step is not None:
            on_step(done)

    errors = mse(source, output)
    quality = errors, psnr_of(errors), ssim(source, output)
    step()
    warp = torch.full((2, frames - 1), math.nan, dtype=torch.float64)
    if frames >= 2:
        made_here = flow is None
        if made_here:
            flow = compute_source_flow(source, DISFlow(), DEFAULT_THRESHOLD, lambda _: step())
        warp = warping_errors([source, output], flow, lambda _: step())
        origin = "computed from the source" if made_here else "from the trajectories"
        flow_note = f"{flow.backend} flow of the source, {flow.threshold:g} px check, {origin}"
    else:
        flow_note = "one frame: no warping error"
    identity = None
    if face_models is not None:
        src_embeddings, src_found = face_models.main_face_embeddings(
            to_uint8(source), lambda _: step(), device
        )
        out_embeddings, out_found = face_models.main_face_embeddings(
            to_uint8(output), lambda _: step(), device
        )
        src, out = torch.from_numpy(src_embeddings), torch.from_numpy(out_embeddings)
        tg_source, tg_source_clip = ids.global_distances(src)
        tg_output, tg_output_clip = ids.global_distances(out)
        identity = IdentityReport(
            ids.paired_distances(src, out),
            ids.consecutive_distances(src),
            ids.consecutive_distances(out),
            tg_source,
            tg_output,
            tg_source_clip,
            tg_output_clip,
            torch.from_numpy(src_found),
            torch.from_numpy(out_found),
        )
        if not (src_found.any() and out_found.any()):
            identity_note = (
                "no face was found in the source or the output: identity needs frontal faces of about 40 px "
                "or more"
            )
    return EditReport(
        frames,
        height,
        width,
        *quality,
        warp[0],
        warp[1],
        flow_note,
        identity,
        identity_note,
        time.perf_counter() - start,
    )
