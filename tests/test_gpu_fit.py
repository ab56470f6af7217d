"""What fits where (issues 19, 29): the GPU memory a run needs at a size, for each way ComfyUI can run a
step (`attention.memory.gpu_needs`: the step in one call, or split, with the recompute mode's source
features held), the largest window that fits a GPU (`largest_window`), the README's table computed from
them for the memory real cards have free, and the `edit` plan fitted to a GPU (`headless.edit_job`:
the largest window that fits when the asked one does not, a refusal only when none does), tested on the
CPU by giving the plan a GPU."""

import re

import pytest
import torch
from comfy_harness import sd15_unet_config
from comfyui_diffferv.attention.memory import (
    COMFY_HEADROOM,
    COMFY_RESERVE,
    GIB,
    SD15_UNET_PARAMETERS,
    card_free,
    comfy_row_bytes,
    gpu_need,
    gpu_needs,
    largest_window,
    patch_bytes,
    step_paths,
)
from comfyui_diffferv.editing.preservation import store_bytes
from comfyui_diffferv.headless import checks, flags
from comfyui_diffferv.headless.cli import InputRefusedError
from comfyui_diffferv.headless.edit_job import prepare_job
from comfyui_diffferv.headless.gpu_fit import Gpu, cuda_gpu, gpu_problem, window_for
from comfyui_diffferv.headless.plan import byte_size, plan_run
from comfyui_diffferv.windows.schedule import CONTEXT_LENGTH, RunPlan, static_windows
from conftest import ROOT
from test_workflows import WORKFLOWS, long_clip_prompt

LATENT_512 = (64, 64)
CHUNKS = {"recompute": 3, "store": 2}
HELD = {"recompute": store_bytes(1, 0, LATENT_512), "store": 0}
"""Bytes per 512 px frame the recompute mode holds on the GPU when its source chunk runs alone."""
GPUS_GB = (6, 8, 12, 16, 24)
LONG_CLIP = WORKFLOWS / "media" / "talking_face_long.mp4"


def test_weights_row_estimate_and_reserve_are_comfyuis_own(comfy, monkeypatch):
    """The SD1.5 UNet's parameter count is that of ComfyUI's model of the real architecture (built on the
    meta device: no memory), a row's estimate is ComfyUI's `memory_required` with flash / xformers
    attention (what CUDA GPUs run; this CPU runs neither, so the test says it does), in fp16 and bf16, square
    or not, and the reserve is ComfyUI's on Linux."""
    import comfy.model_management as mm
    import comfy.supported_models

    config = comfy.supported_models.SD15(sd15_unet_config(dtype=torch.float16))
    config.set_inference_dtype(torch.float16, None)
    model = config.get_model({}, device=torch.device("meta"))
    assert sum(p.numel() for p in model.diffusion_model.parameters()) == SD15_UNET_PARAMETERS
    monkeypatch.setattr(mm, "pytorch_attention_flash_attention", lambda: True)
    for latent in (LATENT_512, (64, 96)):
        assert model.memory_required([1, 4, *latent]) == pytest.approx(comfy_row_bytes(latent, 2))
        assert model.memory_required([48, 4, *latent]) == pytest.approx(48 * comfy_row_bytes(latent, 2))
    assert comfy_row_bytes(LATENT_512, 2) == pytest.approx(81.92 * 2**20)
    if not mm.WINDOWS and mm.args.reserve_vram is None:
        assert mm.extra_reserved_memory() == COMFY_RESERVE


@pytest.mark.parametrize("mode", CHUNKS)
def test_each_way_adds_weights_held_features_one_and_a_half_estimates_and_the_reserve(mode):
    """The ways a step of 16 frames can run, fastest first: each one's largest call (its chunks' rows and
    the patches' extra), the source features it holds, and its total by ComfyUI's rules; a GPU runs the
    first that fits, and the least is what a run cannot do without."""
    chunks, held = CHUNKS[mode], HELD[mode]
    needs = gpu_needs(16, chunks, LATENT_512, 2, held)
    assert [need.path for need in needs] == [path for path, *_ in step_paths(chunks)]
    for need, (_, call_chunks, holds) in zip(needs, step_paths(chunks), strict=True):
        estimate = 16 * call_chunks * comfy_row_bytes(LATENT_512, 2) + patch_bytes(
            16, LATENT_512, 2, mode == "store", call_chunks
        )
        assert need.rows == 16 * call_chunks and need.weights == 2 * SD15_UNET_PARAMETERS
        assert need.held == (16 * held if holds else 0)
        assert need.call == pytest.approx(estimate, abs=1)
        assert need.total == pytest.approx(
            need.weights + need.held + COMFY_HEADROOM * estimate + COMFY_RESERVE, abs=2
        )
    totals = [need.total for need in needs]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == len(totals)
    assert gpu_need(16, chunks, LATENT_512, 2, held) == needs[-1]
    for need in needs:
        assert gpu_need(16, chunks, LATENT_512, 2, held, free=need.total) == need
    assert gpu_need(16, chunks, LATENT_512, 2, held, free=needs[-1].total - 1) == needs[-1]
    assert gpu_need(16, chunks, LATENT_512, 4, held).total > 1.9 * needs[-1].weights  # fp32


@pytest.mark.parametrize("mode", CHUNKS)
def test_the_largest_window_is_the_last_that_fits(mode):
    chunks, held = CHUNKS[mode], HELD[mode]
    for gpu in (4 * GIB, 8 * GIB, 11 * GIB, 16 * GIB):
        window = largest_window(gpu, chunks, LATENT_512, 2, held)
        assert 1 <= window < 256
        assert (
            gpu_need(window, chunks, LATENT_512, 2, held).total
            <= gpu
            < gpu_need(window + 1, chunks, LATENT_512, 2, held).total
        )
    assert largest_window(2 * GIB, chunks, LATENT_512, 2, held) == 0  # the weights alone nearly fill it
    held_256 = store_bytes(1, 0, (32, 32)) if held else 0  # the held features scale with the frame too
    smaller = largest_window(8 * GIB, chunks, (32, 32), 2, held_256)
    assert smaller > 3 * largest_window(8 * GIB, chunks, LATENT_512, 2, held)


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("### How long a clip fits, at 512 px", 1)[1].split("\n#", 1)[0]


def test_the_readme_gpu_table_is_computed_from_the_need():
    """Every row of the README's table (6 to 24 GB cards, less the CUDA context: the largest window per
    cache mode, and the way the default window runs) and its sentence on the default window are what
    `largest_window` and `gpu_needs` give."""
    section = readme_section()
    rows = re.findall(
        r"^\s*\| (\d+) GB \| ([\d.]+) GiB \| (\d+) frames \| (\d+) frames \| (.+) \|$", section, re.MULTILINE
    )
    default = CONTEXT_LENGTH.default
    computed = [
        (
            str(gb),
            f"{card_free(gb) / GIB:.1f}",
            *(
                str(largest_window(card_free(gb), CHUNKS[mode], LATENT_512, 2, HELD[mode]))
                for mode in ("recompute", "store")
            ),
            gpu_need(default, 3, LATENT_512, 2, HELD["recompute"], free=card_free(gb)).path,
        )
        for gb in GPUS_GB
    ]
    print("\n" + "\n".join("| " + " | ".join(row) + " |" for row in computed))
    assert rows == computed
    needs = [
        byte_size(need.total)
        for mode in ("recompute", "store")
        for need in (gpu_needs(default, CHUNKS[mode], LATENT_512, 2, HELD[mode])[i] for i in (0, -1))
    ]
    sentence = (
        f"The default window of {default} needs about {needs[0]} in recompute with each step in one call and "
        f"{needs[1]} at the least, {needs[2]} and {needs[3]} in store"
    )
    assert sentence in " ".join(section.split())


def plan(window: int, chunks: int = 3, frames: int = 121) -> RunPlan:
    return RunPlan(frames, tuple(static_windows(frames, window, 4)), 50, chunks, latent=LATENT_512)


def test_the_window_that_fits_is_the_largest_whose_least_way_fits():
    gpu = Gpu("NVIDIA GeForce RTX 3060", 11 * GIB)
    fits = largest_window(gpu.free, 3, LATENT_512, 2, HELD["recompute"])
    assert window_for(plan(fits), gpu) is None
    assert window_for(plan(fits + 1), gpu) == fits
    assert window_for(plan(fits + 1, chunks=2), gpu) is None  # store holds two chunks
    small = Gpu("a 2 GB GPU", 2 * GIB)
    assert window_for(plan(16), small) == 0
    assert gpu_problem(plan(16), small) == (
        "--window: windows of 16 frames at 512x512 in the recompute cache mode need at least about "
        f"{byte_size(gpu_need(16, 3, LATENT_512, 2, HELD['recompute']).total)} of GPU memory and a 2 GB GPU "
        "has 2.0 GiB free; not even windows of 2 frames fit: use a smaller --size, or --cpu"
    )


def simulated_card(monkeypatch, gigabytes: int) -> Gpu:
    """What `cuda_gpu` finds on a card of `gigabytes` GB with the CUDA context up (`card_free`): torch's
    CUDA queries answered as such a card would (this machine has no GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: f"a {gigabytes} GB card")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *_: (card_free(gigabytes), gigabytes * GIB))
    return cuda_gpu()


def edit_job(gpu: Gpu, *flag_values: str):
    """The `edit` plan of the long clip (121 frames, 512 px by default) on `gpu`, as the command makes it."""
    args = flags.parse(["--video", str(LONG_CLIP), "--output", "edit.mp4", *flag_values])
    return prepare_job(args, checks.preflight(args, None), free_ram=16 * GIB, gpu=gpu)


def test_the_default_edit_runs_window_16_in_recompute_on_an_8_gb_card(monkeypatch):
    """On an 8 GB card (7.4 GiB free) the default window runs in recompute: the source chunk first, then
    edit and negative in one call; the plan says so and keeps the window."""
    gpu = simulated_card(monkeypatch, 8)
    assert gpu.free == pytest.approx(7.41 * GIB, abs=0.01 * GIB)
    job = edit_job(gpu)
    print("\n" + "\n".join(job.lines))
    assert job.plan.sampling_chunks == 3 and job.plan.longest_window == 16 and len(job.plan.windows) == 10
    need = gpu_need(16, 3, LATENT_512, 2, HELD["recompute"], free=gpu.free)
    assert need.path == "the source chunk first, then edit and negative in one call"
    assert f"GPU memory: about {byte_size(need.total)} in fp16 / bf16, {need.path}" in "\n".join(job.lines)
    assert not any(line.startswith("window:") for line in job.lines)


def test_a_window_too_large_for_the_card_becomes_the_largest_that_fits(monkeypatch):
    """--window 64 on a 6 GB card: the plan runs the largest window that fits and says so; a card that no
    window fits refuses in one sentence."""
    gpu = simulated_card(monkeypatch, 6)
    fits = largest_window(gpu.free, 3, LATENT_512, 2, HELD["recompute"])
    job = edit_job(gpu, "--window", "64")
    print("\n" + "\n".join(job.lines))
    assert job.plan.longest_window == fits < 64
    assert job.graph.inputs("DiffFERV_ContextWindows")["context_length"] == fits
    said = next(line for line in job.lines if line.startswith("window:"))
    assert said.startswith(
        f"window: {fits} frames, overlap 4, the largest that fits a 6 GB card (5.4 GiB free);"
    )
    assert said.endswith(
        f"windows of 64 frames (--window 64) would need at least about {byte_size(gpu_need(64, 3, LATENT_512, 2, HELD['recompute']).total)}"
    )
    with pytest.raises(InputRefusedError, match="not even windows of 2 frames fit"):
        edit_job(simulated_card(monkeypatch, 2))


def test_the_edit_plan_says_the_gpu_memory():
    """The plan of the long clip at 512 px in windows of 40 (recompute) without a GPU: the least way and
    what the fastest needs (the README's example)."""
    prompt = long_clip_prompt(window=40, overlap=4)
    _, lines, _ = plan_run(prompt, LONG_CLIP, free_ram=2**40)
    least, fastest = (gpu_needs(40, 3, LATENT_512, 2, HELD["recompute"])[i] for i in (-1, 0))
    line = next(line for line in lines if line.startswith("GPU memory"))
    print(f"\n{line}")
    assert line == (
        f"GPU memory: about {byte_size(least.total)} in fp16 / bf16, the source chunk first, then one chunk per "
        f"call (UNet weights 1.6 GiB + {byte_size(least.held)} of source features held + 1.5 x ComfyUI's "
        f"estimate of {byte_size(least.call)} for the largest UNet call, 40 rows + 400 MiB it keeps free); "
        f"each step in one call: about {byte_size(fastest.total)}"
    )
    assert line in " ".join(readme_section().split())
