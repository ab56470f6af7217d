"""Benchmark of what `specialize`'s three branches do to the UNet's predictions over training steps: the
identity distance (dlib, 1 - cos) of the decoded one-step predictions to the real face, and the
CLIP-direction score (cosine between the CLIP image-embedding change and the text change of an edit,
"old") of the predictions under the edited caption, both on held-out draws, every few steps, mean and
standard deviation over seeds. Prints a table, then name=value lines.

    python tests/benchmarks/bench_objectives.py [--seeds 4] [--steps 40] [--every 10] [--draws 16]

Tiny SD1.5-layout models (random UNet and text encoder, a VAE first trained to reproduce the face crop:
tests/training_probe.py says why), 64 px, the first demo-clip face crop, batch 4, Adam at 1e-4, image
losses at timesteps up to 500 (the default cap); the identity branch with dlib's real network (L1
weight 1, identity weight 1: the defaults), the edit branch with a tiny random two-tower CLIP. The same
seed gives the three branches the same UNet, data order and draws. On the CPU, one thread, deterministic
algorithms asked for; no ComfyUI is started (the CLIP vocabulary comes from the ComfyUI host the tests use).
"""

from __future__ import annotations

import argparse
import runpy
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the face crops and the probe's helpers
import_command = runpy.run_path(str(ROOT / "__main__.py"))["import_command"]
sd15 = import_command("specialize.sd15_diffusers")
data = import_command("specialize.data")
training = import_command("specialize.train")
objectives = import_command("specialize.objectives")
clip_direction = import_command("specialize.clip_direction")
identity = import_command("faces.identity")
dlib_models = import_command("faces.dlib_models")
host = import_command("comfyhost.host")

BRANCHES = ("specialization", "identity", "edit")
RESOLUTION = 64
EDIT = "old"


def tiny_parts(seed: int, vae_state: dict | None = None):
    """SD1.5-layout diffusers models at the tests' tiny widths: UNet and text encoder random from `seed`,
    the VAE loaded from `vae_state` when given."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**sd15.sd15_unet_config(32))
    torch.manual_seed(1000)  # the frozen parts are the same for every seed
    vae = AutoencoderKL(**sd15.sd15_vae_config(32, 1))
    text = CLIPTextModel(sd15.sd15_text_config(2, 512)).eval().requires_grad_(False)
    if vae_state is not None:
        vae.load_state_dict(vae_state)
        vae.eval().requires_grad_(False)
    tokenizer = sd15.load_tokenizer(host.find_comfyui() / "comfy" / "sd1_tokenizer", "benchmark")
    return sd15.SD15Parts(unet, vae, text, tokenizer, sd15.sd15_scheduler())


def tiny_clip():
    from transformers import CLIPConfig, CLIPModel

    small = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 1}
    config = CLIPConfig(
        text_config=small, vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=24
    )
    torch.manual_seed(2000)
    return CLIPModel(config).eval().requires_grad_(False)


def main() -> None:
    from specialize_fixtures import CAPTIONS, portrait_crops
    from training_probe import one_step_predictions, reconstructing_vae

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40, help="training steps per branch and seed")
    parser.add_argument("--every", type=int, default=10, help="measure every this many steps")
    parser.add_argument("--draws", type=int, default=16, help="held-out draws per measurement")
    parser.add_argument("--vae-steps", type=int, default=150, help="steps that teach the VAE the face")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)

    with tempfile.TemporaryDirectory() as tmp:
        crop = portrait_crops()[0]
        crop.save(Path(tmp) / "face.png")
        faces = [data.Pair(Path(tmp) / "face.png", CAPTIONS[0])]
        landmarks, _ = objectives.find_landmarks(faces, RESOLUTION, lambda _: None)
        image = data.load_image(faces[0].image, RESOLUTION)[None]
        base = tiny_parts(0)
        vae_error = reconstructing_vae(base.vae, image, args.vae_steps)
        vae_state = base.vae.state_dict()
        network = identity.DlibIdentity(dlib_models.face_models().resnet).eval().requires_grad_(False)
        loss = clip_direction.DirectionalClipLoss(tiny_clip())
        edit = objectives.EditObjective(loss, base.tokenizer, (EDIT,))
        images = image.expand(args.draws, -1, -1, -1)
        marks = landmarks.expand(args.draws, -1, -1)
        captions = [CAPTIONS[0]] * args.draws
        targets = edit.edited(captions)
        with torch.no_grad():
            contexts = base.encode_text(captions), base.encode_text(targets)
            source = loss.image_features(images)
            texts = loss.text_features(torch.cat([edit.ids(captions, "cpu"), edit.ids(targets, "cpu")]))
        text_direction = texts[args.draws :] - texts[: args.draws]

        def measure(parts, seed: int) -> tuple[float, float]:
            """(identity distance, CLIP-direction score) on held-out draws of `seed`."""
            with torch.no_grad():
                decoded = one_step_predictions(
                    parts, images, contexts[0], torch.Generator().manual_seed(seed)
                )
                distance = float(network.cosine_distance(decoded, images, marks).mean())
                decoded = one_step_predictions(
                    parts, images, contexts[1], torch.Generator().manual_seed(seed)
                )
                direction = loss.image_features(decoded) - source
                score = float(torch.nn.functional.cosine_similarity(direction, text_direction, dim=-1).mean())
            return distance, score

        curves: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for seed in range(args.seeds):
            for branch in BRANCHES:
                parts = tiny_parts(seed, vae_state)
                curve = curves[branch, seed] = [measure(parts, 10_000 + seed)]

                def on_step(step, _loss, parts=parts, curve=curve, seed=seed):
                    if step % args.every == 0:
                        parts.unet.eval()
                        curve.append(measure(parts, 10_000 + seed))
                        parts.unet.train()

                objective = {"identity": objectives.IdentityObjective(network), "edit": edit}.get(branch)
                settings = training.TrainSettings(
                    steps=args.steps, batch_size=4, micro_batch=4, learning_rate=1e-4, resolution=RESOLUTION,
                    general_share=0.0, augment_probability=0.0, save_every=10**9, workers=0, branch=branch,
                    seed=seed,
                )  # fmt: skip
                training.train(
                    parts, faces, [], settings, Path(tmp) / f"{branch}_{seed}", device=torch.device("cpu"),
                    log=lambda _: None, on_step=on_step, objective=objective,
                    landmarks=landmarks if branch == "identity" else None,
                )  # fmt: skip

    steps = [0, *range(args.every, args.steps + 1, args.every)]

    def spread(values: list[float]) -> str:
        deviation = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} +/- {deviation:.4f}"

    print(
        f"VAE reproduces the face with mean |error| {vae_error:.4f}; {args.seeds} seeds, {args.draws} draws"
    )
    print("step | branch         | identity distance (lower: closer) | CLIP-direction score (higher: edited)")
    for index, step in enumerate(steps):
        for branch in BRANCHES:
            distances = [curves[branch, seed][index][0] for seed in range(args.seeds)]
            scores = [curves[branch, seed][index][1] for seed in range(args.seeds)]
            print(f"{step:4d} | {branch:14s} | {spread(distances):33s} | {spread(scores)}")
    last = len(steps) - 1
    print(f"seeds={args.seeds}")
    print(f"steps={args.steps}")
    for branch in BRANCHES:
        distances = [curves[branch, seed][last][0] for seed in range(args.seeds)]
        scores = [curves[branch, seed][last][1] for seed in range(args.seeds)]
        print(f"{branch}_identity_distance_at_{steps[last]}={statistics.mean(distances):.4f}")
        print(f"{branch}_direction_score_at_{steps[last]}={statistics.mean(scores):.4f}")


if __name__ == "__main__":
    main()
