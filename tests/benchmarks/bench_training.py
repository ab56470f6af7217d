"""Benchmark of the specialization training step. Prints name=value lines.

    python tests/benchmarks/bench_training.py [--steps 12]

Tiny SD1.5-layout models (32 base channels, 2-layer CLIP-L-wide text encoder, small VAE; random weights)
at 64x64, effective batch 8 as 2 micro-batches of 4, on the CPU: seconds per optimisation step with
torch's default thread count and with one thread, side by side (small ops on a loaded machine are much
slower with more threads than free cores), and the process's peak resident memory. With a CUDA GPU it
also runs the full SD1.5 UNet at 512x512, batch 8 (one micro-batch, bf16/fp16 autocast, gradient
checkpointing) and prints the device name and the peak GPU memory.
No ComfyUI is started; the CLIP vocabulary comes from the ComfyUI host the tests use.
"""

from __future__ import annotations

import argparse
import resource
import runpy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
import_command = runpy.run_path(str(ROOT / "__main__.py"))["import_command"]
sd15 = import_command("specialize.sd15_diffusers")
data = import_command("specialize.data")
training = import_command("specialize.train")
host = import_command("headless.host")  # finds the ComfyUI tree without importing it


def random_parts(full: bool):
    """SD1.5-layout diffusers models with random weights: full size, or the tests' tiny widths."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**sd15.sd15_unet_config(320 if full else 32))
    vae = AutoencoderKL(**(sd15.sd15_vae_config() if full else sd15.sd15_vae_config(32, 1)))
    text = CLIPTextModel(sd15.sd15_text_config() if full else sd15.sd15_text_config(2, 512))
    tokenizer = sd15.load_tokenizer(host.find_comfyui() / "comfy" / "sd1_tokenizer", "benchmark")
    return sd15.SD15Parts(unet, vae, text, tokenizer, sd15.sd15_scheduler())


def synthetic_pairs(folder: Path, count: int, size: int) -> list:
    rng = np.random.default_rng(0)
    pairs = []
    for index in range(count):
        path = folder / f"image_{index}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        pairs.append(data.Pair(path, f"a photo of person number {index}"))
    return pairs


def seconds_per_step(full: bool, steps: int, threads: int | None, device: torch.device) -> float:
    """Median wall time between consecutive optimisation steps (the first one, warm-up, is left out)."""
    size = 512 if full else 64
    default_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        faces = synthetic_pairs(Path(tmp), 8, size)
        settings = training.TrainSettings(
            steps=steps + 1,
            batch_size=8,
            micro_batch=8 if full else 4,
            learning_rate=1e-5,
            resolution=size,
            general_share=0.0,
            save_every=10**9,
            workers=0,
        )
        stamps = []
        training.train(
            random_parts(full), faces, [], settings, Path(tmp) / "out", device=device, log=lambda _: None,
            on_step=lambda step, loss: stamps.append(time.perf_counter()),
        )  # fmt: skip
    torch.set_num_threads(default_threads)
    return statistics.median(np.diff(stamps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per configuration")
    steps = parser.parse_args().steps
    cpu = torch.device("cpu")
    default = seconds_per_step(False, steps, None, cpu)
    single = seconds_per_step(False, steps, 1, cpu)
    print("tiny_device=cpu")
    print(f"tiny_threads_default={torch.get_num_threads()}")
    print(f"tiny_seconds_per_step={default:.3f}")
    print(f"tiny_seconds_per_step_1_thread={single:.3f}")
    print(f"tiny_default_over_1_thread={default / single:.2f}")
    print(f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        torch.cuda.reset_peak_memory_stats()
        full = seconds_per_step(True, steps, None, gpu)
        print(f"full_device={torch.cuda.get_device_name()}")
        print(f"full_seconds_per_step={full:.3f}")
        print(f"full_peak_gpu_memory_mb={torch.cuda.max_memory_allocated() / 2**20:.0f}")
    else:
        print("full_sd15_512_batch8=skipped (no CUDA GPU)")


if __name__ == "__main__":
    main()
