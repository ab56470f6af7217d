"""Benchmark of the `specialize` training step, per branch (specialization, identity, edit). Prints
name=value lines.

    python tests/benchmarks/bench_training.py [--steps 12]

1. Tiny SD1.5-layout models (32 base channels, 2-layer CLIP-L-wide text encoder, small VAE; random
   weights) at 64x64 on the CPU, effective batch 8 as 2 micro-batches of 4, on face crops of the demo clip
   (dlib finds their landmarks): seconds per optimisation step (median, the warm-up step left out) and
   the peak resident memory of a process that runs only that branch. The specialization branch is also
   timed with torch's default thread count (small ops on a loaded machine are much slower with more
   threads than free cores); the others on one thread. The identity branch uses dlib's real ResNet, the
   edit branch a tiny random two-tower CLIP; both with the image-loss cap at 999, so every face sample
   takes the image-space loss (the most expensive case; the default cap 500 takes it on about half).
2. A computed memory estimate of full SD1.5 at 512 px, micro-batch 2, bf16 autocast, gradient
   checkpointing, per branch: the weights, gradients and Adam moments, plus the activations that autograd
   saves, counted by running the real diffusers/transformers models on the meta device (no memory, no
   compute) with a saved-tensors hook: with checkpointing, the saved block inputs plus the largest
   block's own activations (its recomputation during the backward pass). Attention on the meta device
   saves its attention matrices (the math path): an upper bound where the GPU runs flash attention.
3. With a CUDA GPU: the full SD1.5 UNet at 512x512, batch 8 (micro-batches of 2, bf16/fp16 autocast,
   gradient checkpointing) per branch, seconds per step and peak GPU memory, with ViT-L/14's shapes for
   the edit branch's CLIP (random weights).
No ComfyUI is started; the CLIP vocabulary comes from the ComfyUI host the tests use.
"""

from __future__ import annotations

import argparse
import json
import resource
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' demo-clip face crops
import_command = runpy.run_path(str(ROOT / "__main__.py"))["import_command"]
sd15 = import_command("specialize.sd15_diffusers")
data = import_command("specialize.data")
training = import_command("specialize.train")
objectives = import_command("specialize.objectives")
clip_direction = import_command("specialize.clip_direction")
identity = import_command("faces.identity")
dlib_models = import_command("faces.dlib_models")
host = import_command("comfyhost.host")  # finds the ComfyUI tree without importing it

BRANCHES = ("specialization", "identity", "edit")
GIB = 2**30
VIT_L14 = {
    "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
    "vision_config": {
        "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
        "patch_size": 14, "image_size": 224,
    },
    "projection_dim": 768,
}  # fmt: skip
"""OpenAI CLIP ViT-L/14's shapes (the edit branch's CLIP)."""


def clip_config(full: bool):
    from transformers import CLIPConfig

    if full:
        return CLIPConfig(**VIT_L14)
    small = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 1}
    return CLIPConfig(
        text_config=small, vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=24
    )


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


def face_pairs(folder: Path) -> list:
    """The 6 demo-clip face crops of the specialization tests, with captions."""
    from specialize_fixtures import CAPTIONS, portrait_crops

    pairs = []
    for index, (image, caption) in enumerate(zip(portrait_crops(), CAPTIONS, strict=True)):
        image.save(folder / f"face_{index}.png")
        pairs.append(data.Pair(folder / f"face_{index}.png", caption))
    return pairs


def objective_for(branch: str, full: bool, parts):
    if branch == "identity":
        return objectives.IdentityObjective(identity.DlibIdentity(dlib_models.face_models().resnet))
    if branch == "edit":
        from transformers import CLIPModel

        torch.manual_seed(1)
        loss = clip_direction.DirectionalClipLoss(CLIPModel(clip_config(full)).eval().requires_grad_(False))
        return objectives.EditObjective(loss, parts.tokenizer, clip_direction.EDIT_PHRASES)
    return None


def seconds_per_step(branch: str, full: bool, steps: int, threads: int | None, device: torch.device) -> float:
    """Median wall time between consecutive optimisation steps (the first one, warm-up, is left out)."""
    size = 512 if full else 64
    default_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        faces = face_pairs(Path(tmp))
        parts = random_parts(full)
        objective = objective_for(branch, full, parts)
        landmarks = (
            objectives.find_landmarks(faces, size, lambda _: None)[0] if branch == "identity" else None
        )
        settings = training.TrainSettings(
            steps=steps + 1, batch_size=8, micro_batch=2 if full else 4, learning_rate=1e-5, resolution=size,
            general_share=0.0, save_every=10**9, workers=0, branch=branch, max_image_timestep=999,
        )  # fmt: skip
        stamps = []
        training.train(
            parts, faces, [], settings, Path(tmp) / "out", device=device, log=lambda _: None,
            on_step=lambda step, loss: stamps.append(time.perf_counter()), objective=objective, landmarks=landmarks,
        )  # fmt: skip
    torch.set_num_threads(default_threads)
    return statistics.median(np.diff(stamps))


def child(branch: str, steps: int) -> None:
    """One branch in this process (tiny, CPU, one thread): prints its seconds per step and peak RSS."""
    seconds = seconds_per_step(branch, False, steps, 1, torch.device("cpu"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak}))


def saved_bytes(fn) -> tuple[int, dict]:
    """Bytes of the tensors autograd saves while `fn` runs (the forward pass's activations kept for the
    backward pass), and fn's result."""
    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return total[0], out


def checkpointed_bytes(model, blocks, fn) -> int:
    """Activations of `fn` with gradient checkpointing on `model`: the saved block inputs plus the largest
    of `blocks`' own activations (recomputed, one block at a time, in the backward pass)."""
    sizes, start = [], {}

    def before(module, args):
        start[id(module)] = counter[0]

    def after(module, args, output):
        sizes.append(counter[0] - start[id(module)])

    counter = [0]

    def pack(tensor):
        counter[0] += tensor.numel() * tensor.element_size()
        return tensor

    hooks = [h for b in blocks for h in (b.register_forward_pre_hook(before), b.register_forward_hook(after))]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()  # without checkpointing: each block's own activations
    for hook in hooks:
        hook.remove()
    model.enable_gradient_checkpointing()
    kept, _ = saved_bytes(fn)
    return kept + max(sizes)


def memory_estimate(micro_batch: int = 2) -> dict[str, float]:
    """GiB per branch, full SD1.5 at 512 px (see the module docstring)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPModel

    bf16 = torch.bfloat16
    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd15.sd15_unet_config()).to(bf16)
        vae = AutoencoderKL(**sd15.sd15_vae_config()).to(bf16).requires_grad_(False)
        clip = CLIPModel(clip_config(True)).to(bf16).requires_grad_(False)
        x = torch.randn(micro_batch, 4, 64, 64, dtype=bf16)
        context = torch.randn(micro_batch, 77, 768, dtype=bf16)
        timesteps = torch.tensor([10] * micro_batch)
        z = torch.randn(micro_batch, 4, 64, 64, dtype=bf16, requires_grad=True)
        images = torch.randn(2 * micro_batch, 3, 224, 224, dtype=bf16, requires_grad=True)

        unet_blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
        unet_act = checkpointed_bytes(
            unet, unet_blocks, lambda: unet(x, timesteps, encoder_hidden_states=context).sample
        )
        decoder = vae.decoder
        decode_act = checkpointed_bytes(
            vae, [decoder.mid_block, *decoder.up_blocks], lambda: vae.decode(z).sample
        )
        clip_act, _ = saved_bytes(lambda: clip.vision_model(pixel_values=images).pooler_output)
    chips = torch.rand(2 * micro_batch, 3, 150, 150, requires_grad=True)  # dlib's ResNet: real, on the CPU
    dlib_act, _ = saved_bytes(lambda: dlib_models.face_models().resnet.descriptors(chips * 255))

    unet_params = 859_520_964
    training_state = 16 * unet_params  # fp32 weights, gradients, Adam's two moments
    frozen = 2 * (83_653_863 + 123_060_480)  # VAE and text encoder in bf16
    clip_weights = 4 * sum(p.numel() for p in clip.parameters())  # fp32, as the objective holds it
    base = training_state + frozen + unet_act
    image = 3 * micro_batch * 512 * 512 * 4 * 3  # decoded images, their targets and gradients (fp32)
    estimate = {
        "specialization": base,
        "identity": base + decode_act + image + dlib_act + 22 * 2**20,
        "edit": base + decode_act + image + clip_act + clip_weights,  # the epsilon pass is freed first
    }
    parts = {
        "unet_training_state": training_state,
        "unet_activations": unet_act,
        "vae_decode_activations": decode_act,
        "dlib_activations": dlib_act,
        "clip_vision_activations": clip_act,
        "clip_weights_fp32": clip_weights,
    }
    return {k: v / GIB for k, v in {**parts, **estimate}.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per configuration")
    parser.add_argument("--child", choices=BRANCHES, help=argparse.SUPPRESS)  # one branch in a fresh process
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps)
        return
    cpu = torch.device("cpu")
    default = seconds_per_step("specialization", False, args.steps, None, cpu)
    print("tiny_device=cpu")
    print(f"tiny_threads_default={torch.get_num_threads()}")
    print(f"tiny_specialization_seconds_per_step_default_threads={default:.3f}")
    for branch in BRANCHES:
        command = [sys.executable, __file__, "--child", branch, "--steps", str(args.steps)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"tiny_{branch}_seconds_per_step_1_thread={measured['seconds']:.3f}")
        print(f"tiny_{branch}_peak_rss_mb={measured['peak_rss_mb']:.0f}")
    for name, gib in memory_estimate().items():
        print(f"estimate_sd15_512_microbatch2_{name}_gib={gib:.2f}")
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        print(f"full_device={torch.cuda.get_device_name()}")
        for branch in BRANCHES:
            torch.cuda.reset_peak_memory_stats()
            full = seconds_per_step(branch, True, args.steps, None, gpu)
            print(f"full_{branch}_seconds_per_step={full:.3f}")
            print(f"full_{branch}_peak_gpu_memory_mb={torch.cuda.max_memory_allocated() / 2**20:.0f}")
    else:
        print("full_sd15_512_batch8=skipped (no CUDA GPU)")


if __name__ == "__main__":
    main()
