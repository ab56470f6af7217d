"""Benchmark of long edits in segments (issue 33): host memory flat in the clip's length, seams, one clip
over two servers, and the preview's time.

Every run is the `edit` command as a user runs it, on the random-weight full-size SD1.5 checkpoint
(--size 64, --steps 2, windows of 4 frames overlapping 1, recompute cache), on clips made from the demo
clip workflows/media/talking_face_long.mp4 played forwards and back (no jump cut), at 25 fps:

1. Host memory (`--frames A B`): the peak RSS of an `edit` process (its own ru_maxrss, printed by the
   process at its end) on A and on B frames, both with `--segment N` (and speed mode, `--keyframe-every K`,
   so that thousands of frames fit a CPU's afternoon: the frames, flow and outputs a segment holds are those
   of every frame, only the UNet work is thinned); `rss_ratio` is B's over A's (target: at most 1.1).
   `--whole` adds B frames with `--segment 0` (the whole clip at once, as before segments).
2. Seams (`--seams`): the demo clip's first `--seam-frames` frames edited in segments of `--seam-segment`
   frames and once whole (lossless mkv), the warping error of each consecutive pair along the source's DIS
   flow (metrics.warping); the pairs that touch a shared stretch (from the frame before it to its last)
   against the others: `seam_ratio` (target: at most 1.2), and the same pairs of the edit made whole, to
   tell the seams from what those frames' motion costs anyway.
3. Two servers (`--servers`): two fresh local ComfyUI servers; the clip of `--server-frames` frames in
   segments of `--seam-segment`, on one server and on both: `two_servers_frame_exact` (every frame and its
   time equal), each segment's wall seconds and which server ran it. On one CPU the servers share its cores,
   so the speed-up says little here; the spread and the exactness are the point.
4. Preview (`--preview N`): `edit --preview N` against the full edit of the A-frame clip with the same
   flags (run 1's time): `preview_share` (the preview's seconds over the edit's).

Prints `name=value` lines. Everything lives in a temporary folder removed at the end.

    python tests/benchmarks/bench_segments.py [--frames 200 2000] [--segment 100] [--keyframe-every 8]
        [--whole] [--seams] [--seam-frames 60] [--seam-segment 24] [--servers] [--server-frames 60]
        [--preview 4]
    python tests/benchmarks/bench_segments.py --frames 20 40 --segment 16 --keyframe-every 4 --seams
        --seam-frames 20 --seam-segment 16 --servers --server-frames 20 --preview 2   (smallest)
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
TESTS = BENCHMARKS.parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
DEMO_CLIP = ROOT / "workflows" / "media" / "talking_face_long.mp4"
EDIT = ["--size", "64", "--steps", "2", "--window", "4", "--overlap", "1", "--cache-mode", "recompute"]


def child(argv: list[str]) -> None:
    """`--child EDIT FLAGS`: the edit in this process, then its peak RSS."""
    import conftest  # noqa: F401  (registers the pack's import name)
    from comfyui_diffferv.headless.edit_command import main as edit_main

    status = edit_main(argv)
    print(f"peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}", flush=True)
    sys.exit(status)


def run_edit(arguments: list[str], what: str, in_child: bool = False) -> tuple[float, str]:
    """`edit` with `arguments` in a new process; its wall seconds and its output (stdout, then stderr).
    Stops the benchmark with the output when it fails."""
    command = [sys.executable, __file__, "--child"] if in_child else [sys.executable, str(ROOT), "edit"]
    start = time.perf_counter()
    result = subprocess.run([*command, *arguments], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds, result.stdout + result.stderr


def ping_pong_clip(path: Path, frames: int) -> Path:
    """The demo clip played forwards, back, forwards... for `frames` frames, at 25 fps (mp4)."""
    from comfyui_diffferv.video.decode import video_frames
    from comfyui_diffferv.video.encode import FORMATS, VideoWriter

    demo = list(video_frames(DEMO_CLIP))
    cycle = demo + demo[-2:0:-1]
    with VideoWriter(path, 25.0, FORMATS["mp4 (h264)"], 80) as writer:
        for index in range(frames):
            writer.write(cycle[index % len(cycle)])
    return path


def speed_edit(weights: Path, clip: Path, keyframe_every: int, segment: int, output: Path) -> list[str]:
    """The edit flags of parts 1 and 4: EDIT in speed mode, in segments of `segment` frames."""
    return [
        *("--checkpoint", str(weights), "--video", str(clip), *EDIT, "--keyframe-every", str(keyframe_every)),
        *("--segment", str(segment), "--output", str(output)),
    ]


def memory(args, folder: Path, weights: Path) -> float | None:
    """Part 1; returns the A-frame edit's seconds (for the preview's share)."""
    seconds = {}
    rss = {}
    runs = [(n, args.segment) for n in args.frames] + ([(max(args.frames), 0)] if args.whole else [])
    for frames, segment in runs:
        clip = ping_pong_clip(folder / f"clip_{frames}.mp4", frames)
        flags = speed_edit(
            weights, clip, args.keyframe_every, segment, folder / f"out_{frames}_{segment}.mp4"
        )
        took, stdout = run_edit(flags, f"edit of {frames} frames (--segment {segment})", in_child=True)
        peak = float(re.search(r"peak_rss_mib=([\d.]+)", stdout).group(1))
        tag = f"{frames}f" + ("_whole" if segment == 0 else "")
        rss[tag], seconds[tag] = peak, took
        print(f"peak_rss_mib_{tag}={peak:.1f}")
        print(f"edit_s_{tag}={took:.1f}")
        print(f"edit_s_per_frame_{tag}={took / frames:.3f}")
    low, high = f"{min(args.frames)}f", f"{max(args.frames)}f"
    print(f"rss_ratio_{high}_vs_{low}={rss[high] / rss[low]:.3f}")
    print(f"rss_growth_mib_{high}_minus_{low}={rss[high] - rss[low]:.1f}")
    if args.whole:
        print(f"rss_ratio_{high}_whole_vs_{low}={rss[high + '_whole'] / rss[low]:.3f}")
    return seconds[low]


def seams(args, folder: Path, weights: Path) -> None:
    """Part 2."""
    import torch
    from comfyui_diffferv.flow.backends import DISFlow
    from comfyui_diffferv.flow.trajectories import compute_source_flow
    from comfyui_diffferv.metrics.warping import warping_errors
    from comfyui_diffferv.segments.plan import plan_segments
    from comfyui_diffferv.video.decode import FIT, SIZE_MULTIPLE, fit_frames, read_clip, video_frames

    frames = args.seam_frames
    common = ["--checkpoint", str(weights), "--video", str(DEMO_CLIP), *EDIT, "--frames", str(frames)]
    outputs = {}
    for name, segment in (("segmented", args.seam_segment), ("whole", 0)):
        outputs[name] = folder / f"seams_{name}.mkv"
        run_edit([*common, "--segment", str(segment), "--output", str(outputs[name])], f"seam edit ({name})")
    source = fit_frames(read_clip(DEMO_CLIP, frames).frames, 64, SIZE_MULTIPLE, FIT.default)
    flow = compute_source_flow(source, DISFlow())
    clips = [
        torch.from_numpy(np.stack(list(video_frames(outputs[n])))).float() / 255
        for n in ("segmented", "whole")
    ]
    errors = warping_errors(clips, flow).numpy()
    segments = plan_segments(frames, args.seam_segment)
    seam = np.zeros(frames - 1, bool)
    for segment in segments[1:]:
        seam[max(segment.start - 1, 0) : segment.start + segment.blend_in] = True
    within = ~seam
    print(f"seam_segments={len(segments)} seam_pairs={int(seam.sum())} within_pairs={int(within.sum())}")
    for row, name in enumerate(("segmented", "whole")):
        across, inside = np.nanmean(errors[row, seam]), np.nanmean(errors[row, within])
        print(f"warp_error_{name}_seam_pairs={across:.3f}")
        print(f"warp_error_{name}_other_pairs={inside:.3f}")
        print(f"seam_ratio_{name}={across / inside:.3f}")
    print(
        "seam_ratio_means=the warping error of the pairs that touch a stretch two segments share over that of "
        "the other pairs (segmented); the same pairs of the edit made whole show what their motion costs anyway"
    )


def two_servers(args, folder: Path, weights: Path) -> None:
    """Part 3."""
    from bench_remote import start_servers, stop
    from comfyui_diffferv.headless.workflow import CHECKPOINT
    from comfyui_diffferv.video.container import read_timing
    from comfyui_diffferv.video.decode import video_frames

    models = folder / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "unet").mkdir()
    (models / "checkpoints" / CHECKPOINT).symlink_to(weights)
    clip = ping_pong_clip(folder / "servers_clip.mp4", args.server_frames)
    servers, started = start_servers(folder / "servers", models, 2)
    print(f"servers_start_s={started:.1f}")
    try:
        outputs, done = {}, {}
        for name, count in (("one_server", 1), ("two_servers", 2)):
            outputs[name] = folder / f"{name}.mp4"
            urls = [flag for server in servers[:count] for flag in ("--server", server.url)]
            took, stdout = run_edit(
                [
                    *urls,
                    "--video",
                    str(clip),
                    *EDIT,
                    "--segment",
                    str(args.seam_segment),
                    "--output",
                    str(outputs[name]),
                ],
                f"edit on {count} server(s)",
            )
            done[name] = re.findall(
                r"^segment (\d+)/\d+ \(frames [\d-]+\) done on (\S+) in (.+)$", stdout, re.M
            )
            print(f"{name}_s={took:.1f}")
            print(
                f"{name}_segment_s="
                + ",".join(f"{number}:{seconds.replace(' ', '')}" for number, _, seconds in done[name])
            )
        ran = [url for _, url, _ in done["two_servers"]]
        print("two_servers_segments_per_server=" + ",".join(str(ran.count(server.url)) for server in servers))
    finally:
        stop(servers)
    one, two = (np.stack(list(video_frames(outputs[n]))) for n in ("one_server", "two_servers"))
    same_time = np.array_equal(
        read_timing(outputs["one_server"]).starts, read_timing(outputs["two_servers"]).starts
    )
    print(f"two_servers_frames={len(two)}")
    print(f"two_servers_frame_exact={one.shape == two.shape and np.array_equal(one, two) and same_time}")


def preview(args, folder: Path, weights: Path, full_s: float | None) -> None:
    """Part 4."""
    frames = min(args.frames)
    clip = folder / f"clip_{frames}.mp4"
    if not clip.is_file():
        ping_pong_clip(clip, frames)
    flags = speed_edit(weights, clip, args.keyframe_every, args.segment, folder / "preview.mp4")
    if full_s is None:
        full_s, _ = run_edit(flags, "the full edit")
    took, said = run_edit([*flags, "--preview", str(args.preview)], "the preview")
    estimate = re.search(r"would take about (.+?) on ", said).group(1)
    print(f"preview_frames={args.preview}")
    print(f"preview_s={took:.1f}")
    print(f"preview_estimate_of_the_full_edit={estimate.replace(' ', '')}")
    print(f"full_edit_s={full_s:.1f}")
    print(f"preview_share={took / full_s:.3f}")
    print("preview_share_means=both include starting ComfyUI and loading the model (about the same seconds)")


def main() -> None:
    if "--child" in sys.argv:
        child(sys.argv[sys.argv.index("--child") + 1 :])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--frames", type=int, nargs=2, default=[200, 2000], help="the two clip lengths of part 1"
    )
    parser.add_argument("--segment", type=int, default=100, help="--segment of parts 1 and 4")
    parser.add_argument("--keyframe-every", type=int, default=8, help="speed mode of parts 1 and 4")
    parser.add_argument("--whole", action="store_true", help="part 1 also edits the longer clip at once")
    parser.add_argument("--seams", action="store_true", help="part 2")
    parser.add_argument("--seam-frames", type=int, default=60)
    parser.add_argument("--seam-segment", type=int, default=24, help="--segment of parts 2 and 3")
    parser.add_argument("--servers", action="store_true", help="part 3")
    parser.add_argument("--server-frames", type=int, default=60)
    parser.add_argument("--preview", type=int, default=4, help="part 4: frames of the preview (0: no part 4)")
    args = parser.parse_args()

    from bench_remote import checkpoint

    weights = checkpoint()
    print(
        f"frames={args.frames[0]},{args.frames[1]} segment={args.segment} keyframe_every={args.keyframe_every}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_segments_") as name:
        folder = Path(name)
        import conftest  # noqa: F401  (registers the pack's import name)

        full_s = memory(args, folder, weights)
        if args.seams:
            seams(args, folder, weights)
        if args.servers:
            two_servers(args, folder, weights)
        if args.preview:
            preview(args, folder, weights, full_s)


if __name__ == "__main__":
    main()
