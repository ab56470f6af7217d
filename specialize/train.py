"""The specialization training loop (DiffFERV section 3.2 / 4.1): fine-tune an SD1.5 UNet on faces.

Latent-diffusion loss ||eps - eps_theta(x_t, t, text)||^2 with t uniform over the 1000 training steps,
Adam at 2.5e-6, batch 8 (micro-batches plus gradient accumulation), mixed precision and gradient
checkpointing on a GPU. IP-FaceDiff's identity and edit branches add an image-space loss on the one-step
prediction (objectives.py); the epsilon loss stays. Periodic exports are UNet-only .safetensors files that LoadSpecializedUNet reads;
the training state (fp32 UNet, optimizer, RNG, sample position) is saved next to them so a run resumes
exactly where it stopped. No ComfyUI import.

Memory: the fp32 UNet, its gradients and Adam's two moments (4 x 3.4 GB for SD1.5) plus the activations
of one micro-batch (which gradient checkpointing reduces); the VAE and text encoder are frozen.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from ..unet.sd15 import shape_problems
from .data import MixedSampler, Pair, PairDataset, augment_faces, face_augmentation
from .inputs import (
    AUGMENT_PROBABILITY,
    BATCH_SIZE,
    BRANCH,
    CHECKED,
    CHOSEN,
    GENERAL_SHARE,
    GRADIENT_CHECKPOINTING,
    IDENTITY_WEIGHT,
    L1_WEIGHT,
    LAMBDA1,
    LAMBDA2,
    LEARNING_RATE,
    MAX_IMAGE_TIMESTEP,
    MAX_ROTATION,
    MICRO_BATCH,
    MIXED_PRECISION,
    NAME,
    RESOLUTION,
    SAVE_DTYPE,
    SAVE_EVERY,
    WORKERS,
    ZOOM,
    flag_of,
)
from .objectives import EditObjective, IdentityObjective, decode, move_landmarks, predicted_x0
from .sd15_diffusers import SD15Parts

STATE_DIR = "training_state"
PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class SettingsError(ValueError):
    """Training settings that cannot work; the message says which and why."""


@dataclass(frozen=True)
class TrainSettings:
    """The training run's settings; the defaults, ranges and choices are the declarations of inputs.py."""

    steps: int  # optimisation steps (each one effective batch)
    batch_size: int = BATCH_SIZE.default  # effective batch
    micro_batch: int = (
        MICRO_BATCH.default
    )  # images per forward/backward pass; batch_size / micro_batch passes
    learning_rate: float = LEARNING_RATE.default  # Adam
    resolution: int = RESOLUTION.default
    general_share: float = GENERAL_SHARE.default  # share of general image-text pairs
    max_rotation: float = MAX_ROTATION.default  # degrees
    zoom: tuple[float, float] = ZOOM
    augment_probability: float = AUGMENT_PROBABILITY.default
    mixed_precision: str = (
        MIXED_PRECISION.default
    )  # auto (bf16/fp16 on a GPU, off on the CPU) | no | fp16 | bf16
    gradient_checkpointing: str = GRADIENT_CHECKPOINTING.default  # auto (on with a GPU) | on | off
    save_every: int = SAVE_EVERY.default  # steps between exports and training-state saves
    save_dtype: str = SAVE_DTYPE.default
    seed: int = 0
    workers: int = WORKERS.default  # image-decoding processes (0: decode in the training process)
    name: str = NAME
    branch: str = BRANCH.default  # specialization (DiffFERV) | identity | edit (IP-FaceDiff)
    max_image_timestep: int = MAX_IMAGE_TIMESTEP.default  # image-space losses only at t <= this (of 0..999)
    l1_weight: float = L1_WEIGHT.default  # identity branch, Eq. 5: |x0_hat - y0|_1
    identity_weight: float = (
        IDENTITY_WEIGHT.default
    )  # identity branch, Eq. 5: D_cos of the identity embeddings
    lambda1: float = LAMBDA1.default  # edit branch, Eq. 6: |f_I(y_gen) - f_I(y0)|_2
    lambda2: float = LAMBDA2.default  # edit branch, Eq. 6: 1 - cos of the image and text directions

    def check(self) -> None:
        """Every setting in its declared range or choices (the first that is not refused, in flag terms),
        the batch a multiple of the micro-batch, the resolution of the declared step."""
        if self.steps < 1:
            raise SettingsError(f"--steps is {self.steps}; use a value of 1 or more")
        problems = [
            declared.problem(flag_of(name), getattr(self, name)) for name, declared in CHECKED.items()
        ]
        problems += [
            declared.problem(flag_of(name), getattr(self, name)) for name, declared in CHOSEN.items()
        ]
        problem = next((p for p in problems if p), None)
        if problem:
            raise SettingsError(problem)
        if self.batch_size % self.micro_batch:
            raise SettingsError(
                f"the batch size ({self.batch_size}) must be a multiple of the micro-batch ({self.micro_batch})"
            )
        if self.resolution % RESOLUTION.step:
            raise SettingsError(f"--resolution is {self.resolution}; use a multiple of {RESOLUTION.step}")


def amp_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: full fp32). 'auto' picks bf16 where the GPU supports it, else fp16."""
    if mixed_precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mixed_precision == "no":
        return None
    if device.type != "cuda":
        raise SettingsError(f"mixed precision {mixed_precision} needs a CUDA GPU; use --mixed-precision no")
    return PRECISIONS[mixed_precision]


def export_unet(
    unet: torch.nn.Module, path: Path, key_map: dict[str, str] | None, dtype: torch.dtype, metadata: dict
) -> Path:
    """Write the UNet's weights as a .safetensors file (diffusers keys, or mapped through `key_map`,
    diffusers -> ComfyUI). Written under a temporary name and renamed, so no half-written file is ever
    listed by ComfyUI."""
    weights = {
        (key_map[k] if key_map else k): v.detach().to("cpu", dtype).contiguous()
        for k, v in unet.state_dict().items()
    }
    partial = path.with_name(path.name + ".partial")
    safetensors.torch.save_file(weights, str(partial), metadata={k: str(v) for k, v in metadata.items()})
    partial.replace(path)
    return path


def save_state(
    folder: Path, unet, optimizer, scaler, step: int, samples: int, settings: TrainSettings
) -> None:
    """The training state, replaced as a whole: fp32 UNet (diffusers keys), optimizer and loss-scaler
    state, RNG states, step and sample position."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    export_unet(unet, partial / "unet.safetensors", None, torch.float32, {"diffferv.step": step})
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(
        {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": rng},
        partial / "optimizer.pt",
    )
    record = {"step": step, "samples": samples, "settings": asdict(settings)}
    (partial / "state.json").write_text(json.dumps(record, indent=1))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.replace(old)
    partial.replace(folder)
    shutil.rmtree(old, ignore_errors=True)


def load_state(folder: Path, unet, optimizer, scaler) -> tuple[int, int, dict]:
    """Restore a saved training state into the UNet, optimizer and scaler and the RNGs; returns (step,
    samples seen, saved settings). The optimizer file is read with torch.load(weights_only=True): plain
    tensors and containers only, no code."""
    folder = Path(folder)
    if not (folder / "state.json").is_file():
        raise FileNotFoundError(f"{folder}: no training state here (state.json missing)")
    record = json.loads((folder / "state.json").read_text())
    weights = safetensors.torch.load_file(str(folder / "unet.safetensors"))
    problems = shape_problems(weights, unet.state_dict(), "the base model's UNet")
    if problems:
        raise SettingsError(f"{folder} does not belong to this base model: {'; '.join(problems)}")
    unet.load_state_dict(weights)
    saved = torch.load(folder / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["rng"]["cpu"])
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    return record["step"], record["samples"], record["settings"]


def micro_batch_loss(
    parts: SD15Parts,
    batch,
    augment,
    device: torch.device,
    frozen_dtype,
    autocast,
    settings,
    objective=None,
    backward: Callable[[torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one micro-batch (images [B, 3, S, S] in [-1, 1], captions, is_face, landmarks
    [B, 5, 2]): augment the faces, encode images and captions with the frozen VAE and text encoder, noise
    the latents at uniform random timesteps and regress the noise with the UNet (paper eq. 4). With an
    image-space objective (identity or edit branch), its loss on the face samples at t <= the cap is added.
    Returns (total, image-space term; 0 where none). The edit branch's second UNet pass is a graph of its
    own: given `backward`, the epsilon loss's backward pass runs before it, so the two passes' activations
    are never held at once, and the total returned carries the gradient of the image term only."""
    images, captions, is_face, landmarks = batch
    with torch.no_grad():
        images, matrices = augment_faces(augment, images.to(device), is_face.to(device))
        latents = parts.vae.encode(images.to(frozen_dtype)).latent_dist.sample().float()
        latents = latents * parts.vae.config.scaling_factor
        context = parts.encode_text(list(captions))
    noise = torch.randn_like(latents)
    steps = parts.scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (latents.shape[0],), device=device)
    noisy = parts.scheduler.add_noise(latents, noise, timesteps)
    with autocast:
        prediction = parts.unet(noisy, timesteps, encoder_hidden_states=context).sample
    loss = F.mse_loss(prediction.float(), noise)
    image_loss = torch.zeros((), device=device)
    if objective is None:
        return loss, image_loss
    chosen = is_face.to(device) & (timesteps <= settings.max_image_timestep)
    landmarks = move_landmarks(landmarks.to(device), matrices)
    if isinstance(objective, IdentityObjective):
        chosen &= landmarks.isfinite().flatten(1).all(1)
    index = chosen.nonzero().flatten().tolist()
    if not index:
        return loss, image_loss
    alphas = parts.scheduler.alphas_cumprod
    with autocast:
        if isinstance(objective, IdentityObjective):
            x0 = predicted_x0(alphas, noisy[index], prediction[index], timesteps[index])
            image_loss = objective(decode(parts.vae, x0), images[index], landmarks[index])
        else:
            if backward is not None:
                backward(loss)
                loss = loss.detach()
            chosen_captions = [captions[i] for i in index]
            targets = objective.edited(chosen_captions)
            with torch.no_grad():
                target_context = parts.encode_text(targets)
            edited = parts.unet(noisy[index], timesteps[index], encoder_hidden_states=target_context).sample
            x0 = predicted_x0(alphas, noisy[index], edited, timesteps[index])
            image_loss = objective(decode(parts.vae, x0), images[index], chosen_captions, targets)
    return loss + image_loss.float(), image_loss.float()


def start_or_resume(
    output: Path, resume: Path | None, unet, optimizer, scaler, settings, log
) -> tuple[int, int]:
    """(step, samples seen) to start from. A fresh run seeds the RNG and refuses an output folder that
    holds a training state already; a resumed run restores the state and cuts loss.csv back to its step."""
    state, losses = output / STATE_DIR, output / "loss.csv"
    if resume is None:
        if (state / "state.json").is_file():
            raise SettingsError(
                f"{output} already holds a training state: pass --resume to continue it, or choose another "
                "--output"
            )
        losses.unlink(missing_ok=True)
        torch.manual_seed(settings.seed)
        return 0, 0
    step, samples, saved = load_state(resume, unet, optimizer, scaler)
    for group in optimizer.param_groups:
        group["lr"] = settings.learning_rate
    current = json.loads(json.dumps(asdict(settings)))  # tuples as lists, as saved
    changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v and k != "steps"}
    log(
        f"resuming at step {step} ({samples} samples seen)"
        + (f"; changed settings: {changed}" if changed else "")
    )
    if losses.is_file():  # steps run after the saved state (before a crash) are run again
        rows = [row for row in csv.reader(losses.open()) if int(row[0]) <= step]
        with losses.open("w", newline="") as f:
            csv.writer(f).writerows(rows)
    return step, samples


def train(
    parts: SD15Parts,
    faces: list[Pair],
    general: list[Pair],
    settings: TrainSettings,
    output: Path,
    export_key_map: dict[str, str] | None = None,
    resume: Path | None = None,
    device: torch.device | None = None,
    metadata: dict | None = None,
    log: Callable[[str], None] = tqdm.write,
    on_step: Callable[[int, float], None] | None = None,
    objective: IdentityObjective | EditObjective | None = None,
    landmarks: torch.Tensor | None = None,
) -> list[float]:
    """Fine-tune `parts.unet` in place; returns the loss of every step run. Exports
    `{name}-step{N:06d}.safetensors` every `save_every` steps and `{name}.safetensors` at the end, with the
    training state in output/training_state; appends (step, loss) to output/loss.csv (with the image-space
    term as a third column in the identity and edit branches) and calls `on_step(step, loss)` after each
    optimisation step. `objective`: the branch's image-space loss (None: specialization); `landmarks`
    [faces, 5, 2]: dlib's 5 points of each face image at the training size (identity branch)."""
    if (objective is None) != (settings.branch == "specialization"):
        raise SettingsError(
            f"the {settings.branch} branch needs {'an' if objective is None else 'no'} image objective"
        )
    settings.check()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = amp_dtype(settings.mixed_precision, device)
    frozen_dtype = dtype or torch.float32
    output.mkdir(parents=True, exist_ok=True)

    unet = parts.unet.to(device).train().requires_grad_(True)  # fp32 master weights
    for frozen in (parts.vae, parts.text_encoder):
        frozen.to(device).eval().requires_grad_(False)
        if frozen_dtype != torch.float32:
            frozen.to(frozen_dtype)
    if settings.gradient_checkpointing == "on" or (
        settings.gradient_checkpointing == "auto" and device.type == "cuda"
    ):
        unet.enable_gradient_checkpointing()
        if objective is not None:  # the decode of the prediction keeps activations for the backward pass
            parts.vae.enable_gradient_checkpointing()
    if objective is not None:
        objective.to(device)
    optimizer = torch.optim.Adam(unet.parameters(), lr=settings.learning_rate)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    step, samples = start_or_resume(output, resume, unet, optimizer, scaler, settings, log)

    loader = torch.utils.data.DataLoader(
        PairDataset(faces, general, settings.resolution, landmarks),
        batch_size=settings.micro_batch,
        sampler=MixedSampler(len(faces), len(general), settings.general_share, settings.seed, start=samples),
        num_workers=settings.workers,
        generator=torch.Generator(),  # keeps the loader off the global RNG (exact resume)
        pin_memory=device.type == "cuda",
    )
    batches = iter(loader)
    augment = face_augmentation(settings.max_rotation, settings.zoom, settings.augment_probability)
    accumulation = settings.batch_size // settings.micro_batch
    layout = "comfyui" if export_key_map else "diffusers"
    metadata = {"diffferv.prediction_type": "epsilon", "diffferv.key_layout": layout, **(metadata or {})}

    def save(name: str) -> None:
        path = output / f"{name}.safetensors"
        export_unet(
            unet, path, export_key_map, PRECISIONS[settings.save_dtype], {**metadata, "diffferv.step": step}
        )
        save_state(output / STATE_DIR, unet, optimizer, scaler, step, samples, settings)
        log(f"step {step}: saved {path.name} and the training state")

    def backward(loss: torch.Tensor) -> None:
        scaler.scale(loss / accumulation).backward()

    losses = []
    bar = tqdm(total=settings.steps, initial=step, desc="specialize", unit="step", dynamic_ncols=True)
    try:
        with open(output / "loss.csv", "a", newline="") as loss_file:
            while step < settings.steps:
                total = image_total = 0.0
                for _ in range(accumulation):
                    loss, image_loss = micro_batch_loss(
                        parts,
                        next(batches),
                        augment,
                        device,
                        frozen_dtype,
                        autocast,
                        settings,
                        objective,
                        backward,
                    )
                    backward(loss)
                    total += loss.item() / accumulation
                    image_total += image_loss.item() / accumulation
                if not math.isfinite(total):
                    raise FloatingPointError(
                        f"the loss became {total} at step {step + 1}: lower the learning rate or use "
                        "--mixed-precision bf16/no, and resume from the last saved state"
                    )
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step, samples = step + 1, samples + settings.batch_size
                losses.append(total)
                row = [step, f"{total:.6f}"] + ([f"{image_total:.6f}"] if objective is not None else [])
                csv.writer(loss_file).writerow(row)
                bar.set_postfix(loss=f"{total:.4f}")
                bar.update()
                if on_step is not None:
                    on_step(step, total)
                if step % settings.save_every == 0 and step < settings.steps:
                    save(f"{settings.name}-step{step:06d}")
        save(settings.name)
    except KeyboardInterrupt:
        optimizer.zero_grad(set_to_none=True)
        save_state(output / STATE_DIR, unet, optimizer, scaler, step, samples, settings)
        log(f"interrupted: training state of step {step} saved in {output / STATE_DIR}")
        raise
    finally:
        bar.close()
    return losses
