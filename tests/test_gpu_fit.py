"""What fits where (issue 19): the GPU memory a run needs at a size (`attention.memory.gpu_need`), the
largest window that fits a GPU (`largest_window`), the README's table computed from them, and the `edit`
plan's line and refusal (`headless.checks.gpu_problem`), tested on the CPU by giving the check a GPU."""

import re

import pytest
import torch
from comfy_harness import sd15_unet_config
from comfyui_diffferv.attention.memory import (
    COMFY_HEADROOM,
    COMFY_RESERVE,
    GIB,
    SD15_UNET_PARAMETERS,
    comfy_row_bytes,
    gpu_need,
    largest_window,
    patch_bytes,
)
from comfyui_diffferv.headless.checks import Gpu, gpu_problem
from comfyui_diffferv.headless.plan import byte_size, plan_run
from comfyui_diffferv.windows.schedule import CONTEXT_LENGTH, RunPlan, static_windows
from conftest import ROOT
from test_workflows import WORKFLOWS, long_clip_prompt

LATENT_512 = (64, 64)
CHUNKS = {"recompute": 3, "store": 2}
GPUS_GB = (8, 12, 16, 24)


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
def test_the_need_adds_weights_one_and_a_half_estimates_and_the_reserve(mode):
    chunks = CHUNKS[mode]
    need = gpu_need(16, chunks, LATENT_512)
    estimate = 16 * chunks * comfy_row_bytes(LATENT_512, 2) + patch_bytes(16, LATENT_512, 2, mode == "store")
    assert need.rows == 16 * chunks and need.weights == 2 * SD15_UNET_PARAMETERS
    assert need.call == pytest.approx(estimate, abs=1)
    assert need.total == pytest.approx(need.weights + COMFY_HEADROOM * estimate + COMFY_RESERVE, abs=2)
    assert gpu_need(16, chunks, LATENT_512, element_size=4).total > 1.9 * need.weights  # fp32


@pytest.mark.parametrize("mode", CHUNKS)
def test_the_largest_window_is_the_last_that_fits(mode):
    chunks = CHUNKS[mode]
    for gpu in (4 * GIB, 8 * GIB, 11 * GIB, 24 * GIB, 40 * GIB):
        window = largest_window(gpu, chunks, LATENT_512)
        assert 1 <= window < 256
        assert (
            gpu_need(window, chunks, LATENT_512).total <= gpu < gpu_need(window + 1, chunks, LATENT_512).total
        )
    assert largest_window(2 * GIB, chunks, LATENT_512) == 0  # the weights alone nearly fill it
    assert largest_window(8 * GIB, chunks, (32, 32)) > 3 * largest_window(8 * GIB, chunks, LATENT_512)


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("### How long a clip fits, at 512 px", 1)[1].split("\n#", 1)[0]


def test_the_readme_gpu_table_is_computed_from_the_need():
    """Every row of the README's table (8, 12, 16, 24 GB: the largest window per cache mode) and its
    sentence on the default window are what `largest_window` and `gpu_need` give."""
    section = readme_section()
    rows = re.findall(r"^\s*\| (\d+) GB \| (\d+) frames \| (\d+) frames \|$", section, re.MULTILINE)
    computed = [
        (
            str(gb),
            *(str(largest_window(gb * GIB, CHUNKS[mode], LATENT_512)) for mode in ("recompute", "store")),
        )
        for gb in GPUS_GB
    ]
    print("\n" + "\n".join(f"| {gb} GB | {r} frames | {s} frames |" for gb, r, s in computed))
    assert rows == computed
    default = CONTEXT_LENGTH.default
    needs = [byte_size(gpu_need(default, CHUNKS[mode], LATENT_512).total) for mode in ("recompute", "store")]
    sentence = f"The default window of {default} needs about {needs[0]} in recompute and {needs[1]} in store"
    assert sentence in " ".join(section.split())


def plan(window: int, chunks: int = 3, frames: int = 121) -> RunPlan:
    return RunPlan(frames, tuple(static_windows(frames, window, 4)), 50, chunks, latent=LATENT_512)


def test_a_window_that_cannot_fit_the_gpu_is_refused_naming_the_one_that_fits():
    gpu = Gpu("NVIDIA GeForce RTX 3060", 11 * GIB)
    fits = largest_window(gpu.free, 3, LATENT_512)
    assert gpu_problem(plan(fits), gpu) is None
    assert gpu_problem(plan(fits + 1), gpu) == (
        f"--window: windows of {fits + 1} frames at 512x512 in the recompute cache mode need about "
        f"{byte_size(gpu_need(fits + 1, 3, LATENT_512).total)} of GPU memory and NVIDIA GeForce RTX 3060 has "
        f"11.0 GiB free; use --window {fits} or less (the largest that fits)"
    )
    assert gpu_problem(plan(fits + 1, chunks=2), gpu) is None  # store holds two chunks
    whole = plan(121, frames=121)
    assert gpu_problem(whole, gpu).startswith(
        "--window: the whole clip in one batch (121 frames) at 512x512 in the recompute cache mode need about"
    )
    assert gpu_problem(plan(16), Gpu("a 2 GB GPU", 2 * GIB)).endswith(
        "not even windows of 2 frames fit: use a smaller --size, or --cpu"
    )


def test_the_edit_plan_says_the_gpu_memory_and_the_check_reads_it():
    """The plan of the long clip at 512 px in windows of 40 (recompute): its line on the GPU memory (the
    README's example), and the refusal the command gives on a 12 GB GPU."""
    prompt = long_clip_prompt(window=40, overlap=4)
    run, lines, _ = plan_run(prompt, WORKFLOWS / "media" / "talking_face_long.mp4", free_ram=2**40)
    need = gpu_need(40, 3, LATENT_512)
    line = next(line for line in lines if line.startswith("GPU memory"))
    print(f"\n{line}\n{gpu_problem(run, Gpu('a 12 GB GPU', 12 * GIB))}")
    assert line == (
        f"GPU memory: about {byte_size(need.total)} in fp16 / bf16 (UNet weights 1.6 GiB + 1.5 x ComfyUI's "
        f"estimate of {byte_size(need.call)} for the largest UNet call, 120 rows + 400 MiB it keeps free)"
    )
    assert line in " ".join(readme_section().split())
    fits = largest_window(12 * GIB, 3, LATENT_512)
    assert gpu_problem(run, Gpu("a 12 GB GPU", 12 * GIB)).endswith(
        f"use --window {fits} or less (the largest that fits)"
    )
