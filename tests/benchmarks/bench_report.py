"""Edit Report speed on a long clip; prints ``name=value`` lines.

    python tests/benchmarks/bench_report.py [--frames 121] [--size 512] [--clip PATH]

The clip (default: workflows/media/talking_face_long.mp4, the whole 121-frame talking-face clip, played
forward and back when --frames asks for more) is read, sized as Load Video (DiffFERV) sizes
it (short side --size, crop to multiples of 64), and an mp4 re-encode of it is measured against it, as the
node does with its trajectories connected (the source's flow given):

- ``report_<F>f_<S>px_s``: the whole report, face models fresh (no cached embeddings): image quality,
  warping error of both clips, identity of both clips.
- ``report_rerun_<F>f_<S>px_s``: a second edit (a blurred copy) against the same source: the source's face
  embeddings are cached, as when a user re-runs the graph with other settings.
- ``report_no_identity_<F>f_<S>px_s``: identity off (or dlib not installed).
- ``source_flow_<F>f_<S>px_s``: the source's DIS flow, what the report adds when no trajectories are
  connected.
- ``identity_per_frame_s``: (whole - no identity) / (2 F), one face detection and ResNet pass.
- ``descriptor_dlib_ms``, ``descriptor_torch_ms``: one face descriptor, side by side: dlib's own ResNet
  (one face at a time) and the pack's torch port (faces/resnet.py, batches of 16) on the clip's faces,
  at the torch thread count in force (``torch_threads``; on a machine whose cores are busy with other
  work, one thread can beat two), and ``descriptor_torch_1_thread_ms`` on one thread.
- ``faces_found_output``: the share of frames with a face found (1.0 on the talking-face clips).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import conftest  # noqa: E402, F401  (registers the pack as comfyui_diffferv)
from calibration import blurred, reencoded  # noqa: E402
from comfyui_diffferv.faces.dlib_models import FaceModels, to_uint8  # noqa: E402
from comfyui_diffferv.faces.resnet import FaceResNet  # noqa: E402
from comfyui_diffferv.flow.backends import DISFlow  # noqa: E402
from comfyui_diffferv.flow.trajectories import compute_source_flow  # noqa: E402
from comfyui_diffferv.metrics.report import measure_edit  # noqa: E402
from comfyui_diffferv.video.decode import fit_frames, read_clip  # noqa: E402

LONG_CLIP = TESTS.parent / "workflows" / "media" / "talking_face_long.mp4"


def clip_frames(path: Path | None, frames: int, size: int) -> torch.Tensor:
    if path is None:
        path = LONG_CLIP
    video = read_clip(path, 0).frames
    while video.shape[0] < frames:  # forward, then backward: motion stays continuous
        video = torch.cat([video, video.flip(0)[1:]])
    return fit_frames(video[:frames], size, 64, "crop")


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--size", type=int, default=512, help="short side, as Load Video's short_side")
    parser.add_argument("--clip", type=Path, help="a video or animated image (default: see the docstring)")
    args = parser.parse_args()

    source = clip_frames(args.clip, args.frames, args.size)
    frames, height, width, _ = source.shape
    tag = f"{frames}f_{min(height, width)}px"
    edited = reencoded(source)
    second_edit = blurred(source)
    flow, flow_s = timed(lambda: compute_source_flow(source, DISFlow()))
    dlib = importlib.import_module("dlib")
    model_files = importlib.import_module("face_recognition_models")
    models, load_s = timed(lambda: FaceModels(dlib, model_files))

    report, whole_s = timed(lambda: measure_edit(source, edited, flow, models))
    _, rerun_s = timed(lambda: measure_edit(source, second_edit, flow, models))
    _, plain_s = timed(lambda: measure_edit(source, edited, flow, None))
    print(f"clip_frames={frames}")
    print(f"clip_size={width}x{height}")
    print(f"report_{tag}_s={whole_s:.2f}")
    print(f"report_rerun_{tag}_s={rerun_s:.2f}")
    print(f"report_no_identity_{tag}_s={plain_s:.2f}")
    print(f"source_flow_{tag}_s={flow_s:.2f}")
    print(f"identity_per_frame_s={(whole_s - plain_s) / (2 * frames):.4f}")
    print(f"face_models_load_s={load_s:.2f}")
    frames_u8 = to_uint8(source[:16])
    chips = models.chips(list(frames_u8), [models.main_face(frame) for frame in frames_u8])
    dlib_resnet = dlib.face_recognition_model_v1(model_files.face_recognition_model_location())
    _, dlib_s = timed(lambda: dlib_resnet.compute_face_descriptor(list(chips)))
    torch_resnet = FaceResNet(model_files.face_recognition_model_location())
    torch_resnet(chips)  # first call: one-time set-up of the convolution kernels
    _, torch_s = timed(lambda: torch_resnet(chips))
    print(f"descriptor_dlib_ms={1000 * dlib_s / len(chips):.1f}")
    print(f"descriptor_torch_ms={1000 * torch_s / len(chips):.1f}")
    print(f"torch_threads={torch.get_num_threads()}")
    torch.set_num_threads(1)  # this process only, last: per-core cost, free of other work's contention
    _, single_s = timed(lambda: torch_resnet(chips))
    print(f"descriptor_torch_1_thread_ms={1000 * single_s / len(chips):.1f}")
    print(f"faces_found_output={report.clip()['identity']['face_found']['output']:.3f}")


if __name__ == "__main__":
    main()
