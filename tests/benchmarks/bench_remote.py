"""Benchmark of editing on ComfyUI servers: the `batch` dispatcher's own overhead and how jobs spread.

N tiny jobs (copies of the demo clip workflows/media/talking_face.mp4, each its own edit prompt and
guidance; `--frames 2 --size 64 --steps 2 --window 0 --cache-mode recompute`) on the random-weight
full-size SD1.5 checkpoint, three ways, each timed as a user sees it (wall seconds of the commands):

1. the in-process `edit`, once per job, one new process after another (`python <pack> edit --checkpoint
   ...`): each run starts a ComfyUI and loads the checkpoint;
2. `batch` with one local ComfyUI server (started before the timing; its start-up seconds are printed
   apart): the server starts and loads the model once, and each job pays the upload, the HTTP and
   WebSocket traffic and the output download; `overhead_ratio = batch_one_server_s / in_process_s`;
3. `batch` with two local servers: the wall seconds, how many jobs each server ran (`jobs_per_server`,
   from the "server" field of batch_status.json, in the order the servers are given) and the speed-up
   over one server.

Prints `name=value` lines. Each mode writes into a fresh output folder (the status file would make a
second run skip the finished jobs), every server is fresh (each loads the model in its first job), and
everything lives in temporary folders that are removed at the end.

On a CPU-only machine the servers run with --cpu and two of them compete for the same cores (on the
2-core CI machine they do), so the two-server speed-up says little there: the spread of the jobs is the
point; the speed-up needs one GPU per server.

The checkpoint is $DIFFFERV_TEST_CACHE/checkpoints/random_sd15.safetensors (default .cache/ in the
checkout), built as the tests build it when it is missing (about 2 GB).

    python tests/benchmarks/bench_remote.py [--jobs 4] [--servers 1 2] [--frames 2] [--size 64] [--steps 2]
    python tests/benchmarks/bench_remote.py --jobs 2   (smallest)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
DEMO_CLIP = ROOT / "workflows" / "media" / "talking_face.mp4"
SOURCE = "a photo of a woman"
EDITS = ["old", "young", "smiling", "sad"]


def checkpoint() -> Path:
    """The random-weight SD1.5 checkpoint of the tests, built (as conftest's fixture does) if missing."""
    cache = Path(os.environ.get("DIFFFERV_TEST_CACHE", ROOT / ".cache"))
    path = cache / "checkpoints" / "random_sd15.safetensors"
    if path.is_file():
        return path
    print(f"building the random-weight checkpoint {path} (about 2 GB) ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench_remote_comfy_") as folder:
        from comfy_harness import InProcessComfy, write_random_sd15_checkpoint

        InProcessComfy(Path(folder))  # ComfyUI set up (CPU mode without CUDA) before comfy.sd is imported
        return write_random_sd15_checkpoint(path)


def write_jobs(folder: Path, count: int) -> tuple[Path, list[list[str]]]:
    """A job list of `count` edits of copies of the demo clip, and each job's own `edit` flags."""
    lines, flags = ["# video, source prompt, edit prompt, flags"], []
    for number in range(count):
        clip = folder / f"clip{number}{DEMO_CLIP.suffix}"
        shutil.copy(DEMO_CLIP, clip)
        edit = f"a photo of a {EDITS[number % len(EDITS)]} woman"
        guidance = str(3 + number)
        lines.append(f'{clip.name} "{SOURCE}" "{edit}" --guidance {guidance}')
        flags.append(["--video", str(clip), "--source", SOURCE, "--edit", edit, "--guidance", guidance])
    path = folder / "jobs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, flags


def run(command: list[str], cwd: Path, what: str) -> float:
    """Run a command to its end; its wall seconds. Stops the benchmark with its output when it fails."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds


def start_servers(folder: Path, models: Path, count: int) -> tuple[list, float]:
    """`count` fresh ComfyUI servers started side by side; the seconds until all answer."""
    from comfy_harness import ComfyServer

    start = time.perf_counter()
    servers = []
    try:
        for number in range(count):
            servers.append(ComfyServer(folder / f"server{number}", models_dir=models).launch())
        for server in servers:
            server.ready()
    except BaseException:
        stop(servers)
        raise
    return servers, time.perf_counter() - start


def stop(servers: list) -> None:
    for server in servers:
        server.stop()


def batch_run(folder: Path, jobs: Path, servers: list, common: list[str], name: str) -> tuple[float, dict]:
    """The `batch` command over `servers` into a fresh output folder; its wall seconds and its status."""
    output = folder / f"out_{name}"
    command = [sys.executable, str(ROOT), "batch", "--jobs", str(jobs), "--output-dir", str(output)]
    for server in servers:
        command += ["--server", server.url]
    seconds = run([*command, "--", *common], folder, f"batch with {len(servers)} server(s)")
    status = json.loads((output / "batch_status.json").read_text())["jobs"]
    return seconds, status


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=4, help="how many jobs (copies of the demo clip)")
    parser.add_argument(
        "--servers", type=int, nargs="+", default=[1, 2], choices=[1, 2], help="server counts to measure"
    )
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="short side in pixels (multiple of 64)")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs: give 1 or more")

    import conftest  # noqa: F401  (registers the pack's import name)
    from comfyui_diffferv.headless.workflow import CHECKPOINT

    weights = checkpoint()
    common = [
        *("--frames", str(args.frames), "--size", str(args.size), "--steps", str(args.steps)),
        *("--window", "0", "--cache-mode", "recompute"),
    ]
    print(f"jobs={args.jobs} frames={args.frames} size={args.size} steps={args.steps} cpus={os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="bench_remote_") as name:
        folder = Path(name)
        jobs, flags = write_jobs(folder, args.jobs)
        models = folder / "models"
        (models / "checkpoints").mkdir(parents=True)
        (models / "unet").mkdir()
        (models / "checkpoints" / CHECKPOINT).symlink_to(weights)  # the name `batch` asks for by default

        (folder / "out_in_process").mkdir()
        in_process = 0.0
        for number, own in enumerate(flags):
            output = folder / "out_in_process" / f"job{number}.mp4"
            command = [sys.executable, str(ROOT), "edit", "--checkpoint", str(weights), *common, *own]
            in_process += run([*command, "--output", str(output)], folder, f"in-process edit {number}")
        print(f"in_process_s={in_process:.2f}")
        print(f"in_process_s_per_job={in_process / args.jobs:.2f}")

        measured = {}
        for count in sorted(set(args.servers)):
            servers, started = start_servers(folder / f"servers_{count}", models, count)
            try:
                seconds, status = batch_run(folder, jobs, servers, common, f"{count}_servers")
            finally:
                stop(servers)
            measured[count] = seconds
            label = "batch_one_server" if count == 1 else "batch_two_servers"
            states = Counter(entry["state"] for entry in status.values())
            if states != {"done": args.jobs}:
                sys.exit(f"batch with {count} server(s): the jobs ended {dict(states)}")
            ran = Counter(entry["server"] for entry in status.values())
            print(f"{label}_start_s={started:.2f}")
            print(f"{label}_s={seconds:.2f}")
            print(f"{label}_s_per_job={seconds / args.jobs:.2f}")
            job_seconds = [entry["seconds"] for entry in sorted(status.values(), key=lambda e: e["line"])]
            print(f"{label}_job_s=" + ",".join(f"{value:.1f}" for value in job_seconds))
            if count == 1:
                print(f"overhead_ratio={seconds / in_process:.3f}")
                print(
                    "overhead_ratio_means=batch on one server / in-process edits: each in-process edit starts "
                    "a ComfyUI and loads the model, the server does it once (its start apart), and each batch "
                    "job adds the upload, HTTP and WebSocket traffic and the download"
                )
            else:
                print("jobs_per_server=" + ",".join(str(ran[server.url]) for server in servers))
        if 1 in measured and 2 in measured:
            print(f"speedup_two_vs_one_server={measured[1] / measured[2]:.3f}")
            print(
                "speedup_means=two servers on one machine share its cores (on a CPU); the speed-up needs "
                "one GPU per server"
            )


if __name__ == "__main__":
    main()
