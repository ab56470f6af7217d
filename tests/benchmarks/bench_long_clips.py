"""Benchmark of long clips in context windows: DDIM inversion + preservation-injection sampling of the
first 16, 48 and 121 frames of the long demo clip (workflows/media/talking_face_long.mp4) through
ComfyUI's nodes, with Context Windows (DiffFERV) at a fixed window, per cache mode.

Prints `name=value` lines, per mode and frame count (each case in a fresh process): seconds per frame
(inversion + sampling), peak host memory (RSS), peak device memory (CUDA only: ``max_memory_allocated``,
next to the UNet's weights and ComfyUI's estimate of the largest call as the pack tells it,
``attention.memory.gpu_needs``), host-device syncs inside UNet calls (CUDA only: ``torch.cuda``'s sync
debug mode set to "warn" while the UNet runs, its warnings counted), the largest batch the
UNet saw (a hook on the UNet records every call), UNet calls, and what grows with the clip on the host:
the clip (decoded at the file's size, as Load Video holds it before resizing; the working frames; the
latents; the trajectories) and the cache (store: the features of every window; recompute: the inverted
latents). Then the ratios of the longest clip to the shortest, side by side, and how much the peak host
memory grew next to how much the clip and the cache grew.

`--split` adds one recompute edit of one window under a memory cap that makes ComfyUI split the cond and
uncond chunks into calls of their own (CUDA only): the UNet rows per sampling step and the peak.

`--seams` adds the seam measurement: the clip's first `--seam-frames` frames edited in windows (one run
per fuse method) and in one batch; the temporal warping error of the decoded output
(``metrics.warping``), measured with the source's optical flow (OpenCV DIS, forward-backward checked, the
flow the trajectories were built from), averaged over frame pairs that touch a window overlap (seams)
and over pairs inside one window only. With random weights this compares the
runs; it does not judge the picture.

    python tests/benchmarks/bench_long_clips.py [--frames 16 48 121] [--size 64] [--steps 4] [--seams [--seam-size 128 --seam-steps 10]]
    python tests/benchmarks/bench_long_clips.py --full-size --size 512 --steps 50 --frames 48   (GPU)
    python tests/benchmarks/bench_long_clips.py --full-size --size 512 --steps 50 --modes --split   (GPU)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
LONG_CLIP = TESTS.parent / "workflows" / "media" / "talking_face_long.mp4"
SWITCHES = {f"{kind}_{size}": True for kind in ("swcfa", "tta") for size in (64, 32, 16, 8)}
SOURCE, EDIT = "a photo of a woman", "a photo of an old woman"
MIB = 2**20


class Pipeline:
    """The long clip's first frames loaded, its flow trajectories, latents and a temporally patched
    random-weight SD1.5 model (tiny, or the full architecture, fp16 on a GPU), in an in-process ComfyUI."""

    def __init__(self, frames: int, size: int, full_size: bool):
        import conftest  # noqa: F401  (registers the pack's import name)
        import torch
        from comfy_harness import InProcessComfy, build_clip, build_unet, build_vae

        self.comfy = InProcessComfy(Path(tempfile.mkdtemp(prefix="bench_long_")))
        shutil.copy(LONG_CLIP, self.comfy.workdir / "input" / LONG_CLIP.name)
        dtype = torch.float16 if full_size and torch.cuda.is_available() else torch.float32
        self.unet = build_unet(seed=5, tiny=not full_size, output_scale=0.02, dtype=dtype)
        self.clip, self.vae = build_clip(tiny=not full_size), build_vae(tiny=not full_size)
        (self.images, _, _, _), _ = self.comfy.run_node(
            "DiffFERV_LoadVideo",
            video=LONG_CLIP.name,
            max_frames=frames,
            skip_first_frames=0,
            every_nth=1,
            short_side=size,
            fit="crop",
        )
        (self.trajectories, _), _ = self.comfy.run_node(
            "DiffFERV_ComputeFlowTrajectories",
            frames=self.images,
            backend="dis",
            consistency_threshold=1.0,
            flow_model="none",
            preview_grid="1/16",
        )
        (self.latent,), _ = self.comfy.run_node("VAEEncode", pixels=self.images, vae=self.vae)
        (self.model,), _ = self.comfy.run_node(
            "DiffFERV_ApplyTemporalAttention",
            model=self.unet,
            trajectories=self.trajectories,
            window=3,
            **SWITCHES,
        )

    def windowed(self, window: int, overlap: int, fuse: str = "pyramid"):
        (model,), _ = self.comfy.run_node(
            "DiffFERV_ContextWindows",
            model=self.model,
            context_length=window,
            context_overlap=overlap,
            fuse_method=fuse,
        )
        return model

    def invert(self, model, mode: str, steps: int):
        """DDIM Invert With Cache on the clip; returns the inversion."""
        (inversion, _), _ = self.comfy.run_node(
            "DiffFERV_DDIMInvertWithCache",
            model=model,
            clip=self.clip,
            latent=self.latent,
            source_prompt=SOURCE,
            trajectories=self.trajectories,
            steps=steps,
            cache_mode=mode,
        )
        return inversion

    def sample(self, model, inversion):
        """Preservation Inject Sampler with the edit prompt; returns the edited LATENT."""
        (edited,), _ = self.comfy.run_node(
            "DiffFERV_PreservationInjectSampler",
            model=model,
            clip=self.clip,
            inversion=inversion,
            edit_prompt=EDIT,
            negative_prompt="",
            guidance=5.0,
            tau_app=0.9,
            inject_motion=True,
            inject_semantic=True,
        )
        return edited

    def edit(self, model, mode: str, steps: int) -> tuple[object, object, float, float, list[int]]:
        """Inversion + edit; returns (inversion, edited latent, inversion s, sampling s, UNet batch sizes)."""
        from comfy_harness import unet_calls

        with unet_calls(self.unet) as calls:
            start = time.perf_counter()
            inversion = self.invert(model, mode, steps)
            inverted = time.perf_counter()
            edited = self.sample(model, inversion)
            done = time.perf_counter()
        return inversion, edited, inverted - start, done - inverted, [batch for batch, _ in calls]


@contextlib.contextmanager
def counted_syncs(unet):
    """Counts, while open, the host-device synchronisations inside calls of `unet`'s diffusion model
    (CUDA only): torch's sync debug mode is "warn" from each call's start to its end (hooks on the module,
    removed on exit) and every warning it raises is counted. Yields a one-item list holding the count."""
    import torch

    count = [0]
    module = unet.model.diffusion_model

    def start(*_):
        torch.cuda.set_sync_debug_mode("warn")

    def end(*_):
        torch.cuda.set_sync_debug_mode("default")

    handles = [module.register_forward_pre_hook(start), module.register_forward_hook(end)]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield count
        count[0] = sum("synchroniz" in str(w.message) for w in caught)
    finally:
        torch.cuda.set_sync_debug_mode("default")
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def handed_estimates():
    """Records what ComfyUI's loader is handed while the block runs: (memory_required, minimum) in bytes of
    each ``comfy.sampler_helpers.estimate_memory`` call (the pack's wrapper has set the noise shape)."""
    import comfy.sampler_helpers as helpers

    handed, original = [], helpers.estimate_memory

    def spy(model, noise_shape, conds):
        estimate = original(model, noise_shape, conds)
        handed.append(estimate)
        return estimate

    helpers.estimate_memory = spy
    try:
        yield handed
    finally:
        helpers.estimate_memory = original


def comfy_free_bytes() -> int:
    """The memory ComfyUI reads as free on its device (the GPU's, or the host's on the CPU)."""
    import comfy.model_management as mm

    return int(mm.get_free_memory(mm.get_torch_device()))


def call_estimate(pipeline, mode: str, window: int) -> tuple[int, int]:
    """The UNet's weight bytes and ComfyUI's estimate of the run's largest UNet call as the pack tells it
    (`attention.memory.gpu_needs`, each step in one call: a window's frames x the sampler's chunks, the
    patches' extra)."""
    from comfyui_diffferv.attention.memory import gpu_needs

    weights = pipeline.unet.model.diffusion_model
    element = next(weights.parameters()).element_size()
    latent = tuple(pipeline.latent["samples"].shape[-2:])
    frames = min(window, int(pipeline.latent["samples"].shape[0]))
    call = gpu_needs(frames, 2 if mode == "store" else 3, latent, element)[0].call
    return sum(p.numel() * p.element_size() for p in weights.parameters()), call


def trajectory_bytes(trajectories) -> int:
    """The TRAJECTORIES' memory: every grid's ids and index, and the kept source flow."""
    grids = sum(g.ids.numel() * 8 + g.index.numel() * 8 for g in trajectories.grids.values())
    flow = trajectories.flow
    return grids + (0 if flow is None else flow.forward.numel() * 2 + flow.reliable.numel())


def decoded_bytes(frames: int) -> int:
    """Load Video's peak for the clip: its frames decoded at the file's size as float32 (before resizing)."""
    from comfyui_diffferv.video.decode import probe_clip

    info = probe_clip(LONG_CLIP)
    return frames * info.height * info.width * 3 * 4


def run_case(
    mode: str, frames: int, size: int, steps: int, window: int, overlap: int, full_size: bool
) -> dict:
    import torch

    pipeline = Pipeline(frames, size, full_size)
    model = pipeline.windowed(window, overlap)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    free = comfy_free_bytes()
    with (
        counted_syncs(pipeline.unet) if cuda else contextlib.nullcontext([None]) as syncs,
        handed_estimates() as handed,
    ):
        inversion, _, invert_s, sample_s, batches = pipeline.edit(model, mode, steps)
    cache = inversion.store.nbytes if inversion.store is not None else inversion.latents.numel() * 4
    weights, estimate = call_estimate(pipeline, inversion.mode, window)
    frames = int(pipeline.latent["samples"].shape[0])
    return {
        "s_per_frame": (invert_s + sample_s) / frames,
        "invert_s_per_frame": invert_s / frames,
        "sample_s_per_frame": sample_s / frames,
        "largest_unet_batch": max(batches),
        "unet_calls": len(batches),
        "peak_host_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_mib": torch.cuda.max_memory_allocated() / MIB if cuda else None,
        "unet_weights_mib": weights / MIB,
        "comfy_estimate_largest_call_mib": estimate / MIB,
        "comfy_free_mib_at_start": free / MIB,
        "handed_memory_required_mib": max(required for required, _ in handed) / MIB,
        "handed_minimum_mib": max(minimum for _, minimum in handed) / MIB,
        "unet_syncs": syncs[0],
        "unet_syncs_per_call": syncs[0] / len(batches) if cuda else None,
        "source_clip_mib": decoded_bytes(frames) / MIB,
        "clip_mib": pipeline.images.numel() * pipeline.images.element_size() / MIB,
        "latent_mib": pipeline.latent["samples"].numel() * 4 / MIB,
        "trajectories_mib": trajectory_bytes(pipeline.trajectories) / MIB,
        "cache_mib": cache / MIB,
        "mode_used": inversion.mode,
    }


# --------------------------------------------------------------------------------------------------
# Split


SPLIT_SLACK = 512 * MIB
"""Memory left free beyond the cap in the split case: CUDA's own lazy allocations (a cuBLAS workspace, a
kernel module loaded late) must not be what fails."""


def out_of_memory(error: BaseException) -> bool:
    """Whether `error` is CUDA running out of memory, whichever way it surfaced (torch's OutOfMemoryError,
    or a RuntimeError from cuBLAS / cuDNN failing to allocate)."""
    import torch

    said = str(error)
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("out of memory" in said.lower() or "ALLOC_FAILED" in said)
    )


def run_split(size: int, steps: int, window: int, full_size: bool) -> dict:
    """One recompute edit of one window's frames whose sampler runs with `target` + SPLIT_SLACK bytes of
    device memory free, `target` 1.5x ComfyUI's estimate of 1.5 chunks: more than one chunk needs, less
    than two (edit + negative in one call) do, so ComfyUI's batch check (``comfy.samplers.calc_cond_batch``)
    splits them. ComfyUI reads free memory from ``torch.cuda.mem_get_info`` and the allocator's cache, which
    a per-process fraction does not change, so the cap is a ballast tensor holding the rest of the free
    memory (what ComfyUI sees), made hard with ``torch.cuda.set_per_process_memory_fraction`` (what the
    process may hold: a call that outgrows what ComfyUI sized fails, and is reported, not raised). The
    inversion runs before the cap, which also leaves the UNet's weights loaded. Returns the UNet rows and
    calls per sampling step, the sampling's peak above what the process held when the cap was set, the free
    memory ComfyUI saw and the estimate it was handed."""
    import comfy.model_management as mm
    import torch
    from comfy_harness import unet_calls

    pipeline = Pipeline(window, size, full_size)
    inversion = pipeline.invert(pipeline.model, "recompute", steps)
    device = mm.get_torch_device()
    latent = list(pipeline.latent["samples"].shape[1:])
    target = int(1.5 * pipeline.unet.model.memory_required([int(1.5 * window), *latent]))
    torch.cuda.empty_cache()
    free = int(mm.get_free_memory(device))
    if free <= target + SPLIT_SLACK:
        return {"skipped": f"only {free / MIB:.0f} MiB free, below the cap of {target / MIB:.0f} MiB + slack"}
    ballast = torch.empty(free - target - SPLIT_SLACK, dtype=torch.uint8, device=device)
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(
        min(1.0, (torch.cuda.memory_reserved(device) + target + SPLIT_SLACK) / total)
    )
    torch.cuda.reset_peak_memory_stats()
    held = torch.cuda.memory_allocated(device)  # the weights and the ballast
    seen = comfy_free_bytes()
    failed = None
    try:
        with unet_calls(pipeline.unet) as calls, handed_estimates() as handed:
            pipeline.sample(pipeline.model, inversion)
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not out_of_memory(error):
            raise
        failed = str(error).splitlines()[0]
    finally:
        peak = torch.cuda.max_memory_allocated(device) - held
        torch.cuda.set_per_process_memory_fraction(1.0)
        del ballast
    rows = [batch for batch, _ in calls]
    return {
        "frames": window,
        "cap_mib": target / MIB,
        "comfy_free_mib_at_start": seen / MIB,
        "handed_memory_required_mib": max((required for required, _ in handed), default=0) / MIB,
        "handed_minimum_mib": max((minimum for _, minimum in handed), default=0) / MIB,
        "sampling_peak_mib": peak / MIB,
        "out_of_memory": failed,
        "unet_calls_per_step": len(rows) / steps,
        "unet_rows_per_step": sum(rows) / steps,
        "largest_call_rows": max(rows, default=0),
    }


# --------------------------------------------------------------------------------------------------
# Seams


def seam_pairs(frames: int, window: int, overlap: int) -> tuple[list[int], list[int]]:
    """Frame pairs (t, t + 1) by t: those touching a frame that two windows share (seams), and those
    inside one window only."""
    from comfyui_diffferv.windows.schedule import static_windows

    cover = [0] * frames
    for w in static_windows(frames, window, overlap):
        for f in w:
            cover[f] += 1
    seams = [t for t in range(frames - 1) if cover[t] > 1 or cover[t + 1] > 1]
    inside = [t for t in range(frames - 1) if cover[t] == 1 and cover[t + 1] == 1]
    return seams, inside


def run_seams(frames: int, size: int, steps: int, window: int, overlap: int, fuses: list[str]) -> dict:
    import math

    import torch

    pipeline = Pipeline(frames, size, full_size=False)
    from comfyui_diffferv.metrics.warping import warping_errors  # (registered by Pipeline)

    seams, inside = seam_pairs(frames, window, overlap)
    runs = {"unwindowed": pipeline.model} | {
        f"windowed_{f}": pipeline.windowed(window, overlap, f) for f in fuses
    }
    result = {"seam_pairs": len(seams), "inside_pairs": len(inside)}
    flow = pipeline.trajectories.flow  # the source's flow, as the trajectories were built from it
    clips = {"source": pipeline.images}
    for name, model in runs.items():
        _, edited, _, _, _ = pipeline.edit(model, "recompute", steps)
        with torch.inference_mode():
            clips[name] = pipeline.vae.decode(edited["samples"])
    for name, errors in zip(clips, warping_errors(list(clips.values()), flow).tolist(), strict=True):
        for label, pairs in (("seams", seams), ("inside", inside)):
            values = [errors[t] for t in pairs if not math.isnan(errors[t])]
            result[f"{name}_warp_error_{label}"] = sum(values) / len(values) if values else None
    return result


# --------------------------------------------------------------------------------------------------


def shown(value) -> str:
    return "n/a" if value is None else value if isinstance(value, str) else f"{value:.4g}"


STORE_SHARE_OF_AVAILABLE_RAM = 0.8


def store_skipped(args, frames: int) -> str | None:
    """Why the store mode cannot run `frames` frames here (its cache would not fit the host's RAM), or
    None. The cache of the windows' frames at every step, by the formula the store mode follows."""
    import psutil
    from comfyui_diffferv.editing.preservation import store_bytes
    from comfyui_diffferv.windows.schedule import frame_evaluations, static_windows

    evaluated = frame_evaluations(static_windows(frames, args.window, args.overlap))
    latent = args.size // 8
    need = store_bytes(evaluated, args.steps, (latent, latent), 320 if args.full_size else 32)
    available = psutil.virtual_memory().available
    if need <= STORE_SHARE_OF_AVAILABLE_RAM * available:
        return None
    return f"needs {need / 2**30:.0f} GiB of host RAM for its cache, {available / 2**30:.0f} GiB available"


def subprocess_case(args, *case: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--case",
        *case,
        "--size",
        str(args.size),
        "--steps",
        str(args.steps),
    ]
    command += ["--window", str(args.window), "--overlap", str(args.overlap)]
    command += ["--full-size"] * args.full_size
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 48, 121])
    parser.add_argument("--size", type=int, default=64, help="short side in pixels (multiple of 64)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--modes", nargs="*", default=["recompute", "store"], help="none: seams only")
    parser.add_argument(
        "--full-size", action="store_true", help="the full SD1.5 architecture (fp16 on a GPU)"
    )
    parser.add_argument(
        "--split", action="store_true", help="also one edit of one window under a cap that splits cond/uncond"
    )
    parser.add_argument("--seams", action="store_true", help="also measure warping errors at window seams")
    parser.add_argument("--seam-frames", type=int, default=48)
    parser.add_argument("--seam-size", type=int, default=128)
    parser.add_argument("--seam-steps", type=int, default=10)
    parser.add_argument("--fuses", nargs="+", default=["pyramid", "overlap-linear", "flat", "relative"])
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        if args.case[0] == "split":
            values = run_split(args.size, args.steps, args.window, args.full_size)
        elif args.case[0] == "seams":
            values = run_seams(
                int(args.case[1]), args.size, args.steps, args.window, args.overlap, args.case[2:]
            )
        else:
            mode, frames = args.case[0], int(args.case[1])
            values = run_case(mode, frames, args.size, args.steps, args.window, args.overlap, args.full_size)
        print(json.dumps(values))
        return

    model = "full" if args.full_size else "tiny"
    print(
        f"model={model}_sd15 size={args.size} steps={args.steps} window={args.window} overlap={args.overlap}"
    )
    low, high = min(args.frames), max(args.frames)
    import conftest  # noqa: F401  (registers the pack's import name)
    import torch

    if args.modes and not torch.cuda.is_available():
        print(f"{model}_device_memory_and_syncs_skipped=needs a CUDA GPU (peak VRAM, sync count: n/a below)")
    for mode in args.modes:
        results = {}
        for frames in args.frames:
            skipped = store_skipped(args, frames) if mode == "store" else None
            if skipped:
                print(f"{model}_{mode}_{frames}f_skipped={skipped}")
                continue
            results[frames] = values = subprocess_case(args, mode, str(frames))
            for key, value in values.items():
                print(f"{model}_{mode}_{frames}f_{key}={shown(value)}")
        if low == high or low not in results or high not in results:
            continue
        a, b = results[low], results[high]
        for key in ("s_per_frame", "largest_unet_batch", "peak_host_mib", "cache_mib", "clip_mib"):
            print(f"{model}_{mode}_ratio_{high}f_{low}f_{key}={b[key] / a[key]:.3f}")
        grown = b["peak_host_mib"] - a["peak_host_mib"]
        clip = sum(b[k] - a[k] for k in ("source_clip_mib", "clip_mib", "latent_mib", "trajectories_mib"))
        print(f"{model}_{mode}_host_growth_mib_{high}f_minus_{low}f={grown:.1f}")
        print(f"{model}_{mode}_clip_growth_mib_{high}f_minus_{low}f={clip:.1f}")
        print(f"{model}_{mode}_cache_growth_mib_{high}f_minus_{low}f={b['cache_mib'] - a['cache_mib']:.1f}")
    if args.split:
        if not torch.cuda.is_available():
            print(f"{model}_split_skipped=needs a CUDA GPU (the cap is on device memory)")
        else:
            for key, value in subprocess_case(args, "split").items():
                print(f"{model}_split_{key}={shown(value)}")
    if args.seams:
        seams = argparse.Namespace(**{**vars(args), "size": args.seam_size, "steps": args.seam_steps})
        print(f"seams: tiny_sd15 size={args.seam_size} steps={args.seam_steps} frames={args.seam_frames}")
        values = subprocess_case(seams, "seams", str(args.seam_frames), *args.fuses)
        for key, value in values.items():
            print(f"seams_{args.seam_frames}f_{key}={shown(value)}")


if __name__ == "__main__":
    main()
