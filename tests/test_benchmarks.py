"""Every benchmark in tests/benchmarks runs, as its docstring says, in its smallest mode.

The numbers of these runs mean nothing (tiny sizes, one repeat); what is checked is that each command
the README and the docstrings give still starts, runs to the end and prints its name=value lines, so a
benchmark cannot rot unnoticed (one did: bench_training.py stopped at an import).
"""

import concurrent.futures
import functools
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

BENCHMARKS = ROOT / "tests" / "benchmarks"
SMALLEST = {
    "bench_attention.py": ["--frames", "2", "--size", "64", "--repeats", "1", "--memory-frames", "2", "4"],
    "bench_editing.py": ["--size", "64", "--steps", "2", "--frames", "2"],
    "bench_gpu_plan.py": ["--size", "64", "--cards", "2", "8"],
    "bench_identity_model.py": ["--frames", "3", "--size", "64", "--steps", "2", "--repeats", "1"],
    "bench_memory.py": ["--frames", "2", "--size", "64"],
    "bench_objectives.py": [
        "--seeds",
        "1",
        "--steps",
        "1",
        "--every",
        "1",
        "--draws",
        "2",
        "--vae-steps",
        "1",
    ],
    "bench_long_clips.py": [  # the store mode: in gpu_check.sh --smoke below
        *("--frames", "6", "10", "--size", "64", "--steps", "1", "--window", "4", "--overlap", "1"),
        *("--modes", "recompute"),
        *("--seams", "--seam-frames", "10", "--seam-size", "64", "--seam-steps", "1", "--fuses", "pyramid"),
        "--split",
    ],
    "bench_report.py": ["--frames", "4", "--size", "64"],
    "bench_remote.py": ["--jobs", "1", "--servers", "1"],
    "bench_segments.py": [
        *("--frames", "20", "40", "--segment", "16", "--keyframe-every", "4", "--preview", "2"),
        *("--seams", "--seam-frames", "20", "--seam-segment", "16", "--servers", "--server-frames", "20"),
    ],
    "bench_speed_mode.py": ["--frames", "6", "--size", "64", "--steps", "2", "--every", "4"],
    "bench_training.py": ["--steps", "1"],
    "bench_trajectories.py": [],
}
"""Each benchmark's smallest arguments (a new benchmark must add its line here)."""


def test_every_benchmark_has_a_smallest_mode():
    assert sorted(path.name for path in BENCHMARKS.glob("bench_*.py")) == sorted(SMALLEST)


RUNS_AT_ONCE = 2
"""Smallest runs side by side: each spends most of its time starting Python, torch and ComfyUI on one
core, so two at once on this 2-core machine take about half the wall time of one after another."""
THREADS_PER_RUN = max(1, (os.cpu_count() or 1) // RUNS_AT_ONCE)
"""torch's threads in each run (OMP_NUM_THREADS): by default every run takes a thread per core, and runs
side by side then fight for the cores. Two edits of bench_segments at once on the 2-core machine: 234 s
with torch's default threads, 117 s with one thread each."""
TIMEOUT_S = 1800
"""A smallest run that takes longer is taken as hung (bench_segments, the longest, takes about 10 min
beside another run)."""
GPU_CHECK = "gpu_check.sh"


@pytest.fixture(scope="module")
def smallest_runs(tmp_path_factory):
    """Every benchmark's smallest run and gpu_check.sh --smoke, started together (RUNS_AT_ONCE at a time,
    the longest first) when the first test of this module asks: {name: (future CompletedProcess, its
    working folder)}."""
    python = {**os.environ, "DIFFFERV_PYTHON": sys.executable, "OMP_NUM_THREADS": str(THREADS_PER_RUN)}
    commands = {
        name: [sys.executable, str(BENCHMARKS / name), *arguments] for name, arguments in SMALLEST.items()
    }
    commands[GPU_CHECK] = ["bash", str(BENCHMARKS / GPU_CHECK), "--smoke"]
    longest_first = [
        GPU_CHECK,
        "bench_segments.py",
        "bench_training.py",
        "bench_remote.py",
        "bench_long_clips.py",
    ]
    order = longest_first + sorted(set(commands) - set(longest_first))
    with concurrent.futures.ThreadPoolExecutor(RUNS_AT_ONCE) as pool:
        runs = {}
        for name in order:
            folder = tmp_path_factory.mktemp(name.replace(".", "_"))
            run = functools.partial(
                subprocess.run,
                commands[name],
                capture_output=True,
                text=True,
                cwd=folder,
                timeout=TIMEOUT_S,
                env=python,
            )
            runs[name] = (pool.submit(run), folder)
        yield runs


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALLEST))
def test_benchmark_runs_in_its_smallest_mode(name, smallest_runs):
    future, folder = smallest_runs[name]
    result = future.result()
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stdout}\n{result.stderr}"
    values = [line for line in result.stdout.splitlines() if re.fullmatch(r"\w+=\S.*", line)]
    assert len(values) >= 3, f"{name} printed no name=value lines:\n{result.stdout}"
    assert sorted(path.name for path in folder.iterdir()) == [], f"{name} left files in its working folder"


@pytest.mark.slow
def test_gpu_check_runs_its_smoke_mode_on_the_cpu(smallest_runs):
    """tests/benchmarks/gpu_check.sh, the full-size GPU check of long clips, takes the same path at a tiny
    size on the CPU (--smoke): its preflight line, each case in its own process with a line as it ends,
    both cache modes, the name=value lines (with ComfyUI's estimate of the largest call, the free memory it
    saw and what it was handed), and a "skipped" line for each GPU-only part (peak VRAM and sync count, the
    edit under a memory cap)."""
    result = smallest_runs[GPU_CHECK][0].result()
    assert result.returncode == 0, f"gpu_check.sh --smoke failed:\n{result.stdout}\n{result.stderr}"
    assert re.search(r"^python=\S+ torch=\S+ torch_cuda=\S+ comfyui=", result.stdout, re.MULTILINE)
    assert re.findall(r"^case_done (\w+) \d+s$", result.stdout, re.MULTILINE) == [
        "split",
        "recompute",
        "store",
    ]
    for mode, frames in (("recompute", 6), ("store", 4)):
        for value in ("s_per_frame", "largest_unet_batch", "comfy_estimate_largest_call_mib"):
            assert f"tiny_{mode}_{frames}f_{value}=" in result.stdout
        for value in ("comfy_free_mib_at_start", "handed_memory_required_mib", "handed_minimum_mib"):
            assert f"tiny_{mode}_{frames}f_{value}=" in result.stdout
        assert f"tiny_{mode}_{frames}f_unet_syncs=n/a" in result.stdout
    assert "tiny_device_memory_and_syncs_skipped=needs a CUDA GPU" in result.stdout
    assert "tiny_split_skipped=needs a CUDA GPU" in result.stdout
    assert "gpu_check_wall_s=" in result.stdout and "case_failed" not in result.stdout


def test_gpu_preflight_names_what_is_missing_in_one_line(tmp_path):
    """A machine whose Python lacks PyAV (an `av` module that fails to import stands in for it): the
    preflight exits 1 with one line naming it and where it comes from, before any case runs."""
    (tmp_path / "av.py").write_text('raise ImportError("no PyAV here")\n')
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_preflight.py"), "--smoke"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["gpu_check: missing: PyAV (wheel folder) (no PyAV here)"]
