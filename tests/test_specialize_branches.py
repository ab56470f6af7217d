"""IP-FaceDiff's identity and edit branches of `specialize`: the losses reach the UNet, training with the
identity loss brings the prediction's identity closer to the real face than epsilon-only training, files
are checked before training, and each branch runs end to end through the command, resumed exactly."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from onnx_fixtures import TinyIResNet, export
from specialize_fixtures import run_command, train_arguments

pytestmark = pytest.mark.usefixtures("single_thread")

RESOLUTION = 64


def write_tiny_clip(path: Path, parts: str = "both") -> Path:
    """A random two-tower CLIP in transformers' layout (CLIP-L's vocabulary, 32 wide, 32 px images), saved
    as a .safetensors file; ``parts`` 'vision' keeps the image tower only (an IPAdapter-style encoder),
    'text' the text tower without projection (an SD1.5-style text encoder)."""
    from transformers import CLIPConfig, CLIPModel

    small = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 1}
    config = CLIPConfig(
        text_config={**small, "vocab_size": 49408, "max_position_embeddings": 77},
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=24,
    )
    torch.manual_seed(5)
    weights = CLIPModel(config).eval().state_dict()
    if parts == "vision":
        weights = {k: v for k, v in weights.items() if k.startswith(("vision_model.", "visual_projection"))}
    elif parts == "text":
        weights = {k: v for k, v in weights.items() if k.startswith("text_model.")}
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def parts_factory(tiny_checkpoint):
    from comfyui_diffferv.specialize.sd15_diffusers import load_base

    return lambda: load_base(tiny_checkpoint.path, tiny_checkpoint.comfyui / "comfy" / "sd1_tokenizer")


@pytest.fixture(scope="module")
def face_pairs(portraits):
    from comfyui_diffferv.specialize.data import scan_folder

    return sorted(scan_folder(portraits.faces).pairs, key=lambda p: p.image)


def test_tiny_clip_loads_and_the_edit_loss_reaches_the_unet(tmp_path, parts_factory, face_pairs):
    from comfyui_diffferv.specialize.clip_direction import DirectionalClipLoss, load_clip
    from comfyui_diffferv.specialize.data import PairDataset, face_augmentation
    from comfyui_diffferv.specialize.objectives import EditObjective
    from comfyui_diffferv.specialize.train import TrainSettings, micro_batch_loss
    from transformers import CLIPModel

    path = write_tiny_clip(tmp_path / "clip_vision_l.safetensors")
    clip = load_clip(path)
    assert clip.config.vision_config.image_size == 32 and clip.config.projection_dim == 24
    reference = CLIPModel(clip.config)
    reference.load_state_dict(safetensors.torch.load_file(str(path)))
    ids = torch.randint(0, 49407, (2, 77))
    torch.testing.assert_close(
        clip.text_model(input_ids=ids).pooler_output, reference.eval().text_model(input_ids=ids).pooler_output
    )

    parts = parts_factory()
    objective = EditObjective(DirectionalClipLoss(clip), parts.tokenizer, ("with eyeglasses", "old"))
    dataset = PairDataset(face_pairs[:2], [], RESOLUTION)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    settings = TrainSettings(steps=1, branch="edit", max_image_timestep=999)  # every sample gets the loss
    torch.manual_seed(0)
    parts.unet.requires_grad_(True)
    augment = face_augmentation(0.0, (1.0, 1.0), 0.0)
    loss, image_loss = micro_batch_loss(
        parts, batch, augment, torch.device("cpu"), torch.float32, torch.autocast("cpu", enabled=False),
        settings, objective,
    )  # fmt: skip
    assert 0 < image_loss.item() < loss.item()
    gradients = torch.autograd.grad(image_loss, list(parts.unet.parameters()), allow_unused=True)
    reached = [g for g in gradients if g is not None and g.abs().sum() > 0]
    assert len(reached) > 0.9 * len(gradients), (
        f"{len(reached)} of {len(gradients)} UNet tensors get a gradient"
    )
    assert all(torch.isfinite(g).all() for g in reached)
    assert objective.edited(["a photo of a woman."])[0] in {
        "a photo of a woman, with eyeglasses",
        "a photo of a woman, old",
    }


@pytest.mark.parametrize(
    "parts, message",
    [
        (
            "vision",
            "a vision-only CLIP (image encoder, e.g. IPAdapter's): the edit loss needs the text tower",
        ),
        ("text", "a CLIP text encoder without its projection (like SD1.5's)"),
    ],
)
def test_clip_files_without_both_towers_are_refused_before_training(
    parts, message, tmp_path, tiny_checkpoint, portraits, capsys
):
    from comfyui_diffferv.specialize.command import main

    path = write_tiny_clip(tmp_path / f"clip_{parts}.safetensors", parts)
    arguments = train_arguments(tiny_checkpoint, portraits, tmp_path / "out", 2, "--branch", "edit")
    assert main([*arguments, "--clip", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"--clip clip_{parts}.safetensors: {message}" in err
    assert not (tmp_path / "out" / "loss.csv").exists()  # refused before any training


def test_options_of_another_branch_and_unknown_onnx_operators_are_refused(
    tmp_path, tiny_checkpoint, portraits, capsys
):
    from comfyui_diffferv.specialize.command import main

    arguments = train_arguments(tiny_checkpoint, portraits, tmp_path / "out", 2)
    assert main([*arguments, "--lambda1", "0.5"]) == 2
    assert "--lambda1 belong to --branch edit, not --branch specialization" in capsys.readouterr().err
    assert main([*arguments, "--branch", "edit"]) == 2
    assert "--branch edit needs --clip" in capsys.readouterr().err
    assert main([*arguments, "--branch", "identity", "--identity-weight", "-1"]) == 2
    assert "--identity-weight is -1; use a value of 0 or more" in capsys.readouterr().err
    assert main([*arguments, "--branch", "identity", "--max-image-timestep", "1000"]) == 2
    assert "--max-image-timestep is 1000; use a value from 0 to 999" in capsys.readouterr().err

    class Softplus(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.softplus(x).mean((2, 3))

    export(Softplus(), tmp_path / "odd.onnx")
    identity = [*arguments, "--branch", "identity", "--identity-model"]
    assert main([*identity, str(tmp_path / "odd.onnx")]) == 2
    err = capsys.readouterr().err
    assert (
        "--identity-model " in err and "odd.onnx: uses ONNX operators this converter does not know: " in err
    )
    assert "Softplus" in err.split("(known:")[0]
    assert main([*identity, str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx: file not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def face_vae(parts_factory, face_pairs):
    """The tiny SD1.5 parts whose VAE reproduces the first face crop (tests/training_probe.py says why),
    DRAWS copies of that crop [N, 3, 64, 64], its dlib landmarks [N, 5, 2] and the trainer's micro-batch
    of those copies. Torch asks for deterministic algorithms while the probe tests run."""
    from comfyui_diffferv.specialize.data import PairDataset, load_image
    from comfyui_diffferv.specialize.objectives import find_landmarks
    from training_probe import DRAWS, reconstructing_vae

    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    face = face_pairs[:1]
    landmarks, missed = find_landmarks(face, RESOLUTION, print)
    assert not missed
    image = load_image(face[0].image, RESOLUTION)[None]
    parts = parts_factory()
    error = reconstructing_vae(parts.vae, image)
    print(f"\nthe VAE reproduces the face crop with mean |error| {error:.4f} (of a range of 2)")
    parts.text_encoder.eval().requires_grad_(False)
    parts.unet.train().requires_grad_(True)
    dataset = PairDataset(face, [], RESOLUTION, landmarks)
    batch = torch.utils.data.default_collate([dataset[0]] * DRAWS)
    yield parts, image.expand(DRAWS, -1, -1, -1), landmarks.expand(DRAWS, -1, -1), batch
    torch.use_deterministic_algorithms(deterministic)


PROBE_SEEDS = range(5)
EDIT_DRAWS = 16
"""Draws of the edit probe: its effect is large (about 20 standard errors at 32 draws), so half suffice."""
PROBE_MARGIN = 3.0
"""How many standard errors above zero the mean paired difference must be (measured: about 4.5)."""


def assert_the_term_works(rows) -> None:
    """On every seed the term's step improves the held-out measure and more than the epsilon term's
    step does, its gradient is better aligned with the measure's, and the mean paired differences are
    PROBE_MARGIN standard errors above zero."""
    import statistics

    for row in rows:
        assert row.change_term < 0 and row.change_term < row.change_epsilon, row
        assert row.cos_term > row.cos_epsilon, row
    for values in (
        [r.change_epsilon - r.change_term for r in rows],
        [r.cos_term - r.cos_epsilon for r in rows],
    ):
        error = statistics.stdev(values) / len(values) ** 0.5
        assert statistics.mean(values) > PROBE_MARGIN * error, values


def test_the_identity_term_lowers_the_identity_distance_of_unseen_predictions(face_vae):
    """IP-FaceDiff's identity branch: the gradient of its identity term (dlib's real network, eq. 5 with
    the L1 weight 0) on 32 training draws, against the epsilon term's on the same draws, measured on 32
    other draws by the identity distance (1 - cos) of the decoded one-step predictions to the real face;
    five seeds (tests/training_probe.py: the probe, the setting and what is deterministic)."""
    from comfyui_diffferv.faces.dlib_models import face_models
    from comfyui_diffferv.faces.identity import DlibIdentity
    from comfyui_diffferv.specialize.objectives import IdentityObjective
    from comfyui_diffferv.specialize.train import TrainSettings
    from training_probe import one_step_predictions, probe, table

    parts, images, landmarks, batch = face_vae
    network = DlibIdentity(face_models().resnet).eval().requires_grad_(False)
    objective = IdentityObjective(network, l1_weight=0.0)
    settings = TrainSettings(steps=1, branch="identity", resolution=RESOLUTION, augment_probability=0.0)
    with torch.no_grad():
        context = parts.encode_text(["a photo of a woman"] * len(images))

    def identity_distance(generator):
        decoded = one_step_predictions(parts, images, context, generator)
        return network.cosine_distance(decoded, images, landmarks).mean()

    rows = [probe(parts, batch, objective, settings, identity_distance, seed) for seed in PROBE_SEEDS]
    print("\n" + table("identity term vs epsilon term, held-out identity distance", rows))
    assert_the_term_works(rows)


def test_the_edit_term_turns_unseen_predictions_along_the_edit_direction(tmp_path, face_vae):
    """IP-FaceDiff's edit branch: the gradient of its directional CLIP term (eq. 6, a tiny random two-tower
    CLIP, one edit phrase) on EDIT_DRAWS training draws, against the epsilon term's, measured on as many
    other draws
    by 1 - the CLIP-direction score: the cosine between the change of the CLIP image embedding (the
    decoded prediction under the edited caption against the real face) and the change of the text
    embedding (edited caption against caption)."""
    from comfyui_diffferv.specialize.clip_direction import DirectionalClipLoss, load_clip
    from comfyui_diffferv.specialize.objectives import EditObjective
    from comfyui_diffferv.specialize.train import TrainSettings
    from training_probe import one_step_predictions, probe, table

    parts, images, _, batch = face_vae
    images, batch = images[:EDIT_DRAWS], [part[:EDIT_DRAWS] for part in batch]
    loss = DirectionalClipLoss(load_clip(write_tiny_clip(tmp_path / "clip.safetensors")))
    objective = EditObjective(loss, parts.tokenizer, ("old",))
    settings = TrainSettings(steps=1, branch="edit", resolution=RESOLUTION, augment_probability=0.0)
    captions = list(batch[1])
    targets = objective.edited(captions)
    with torch.no_grad():
        context = parts.encode_text(targets)
        source = loss.image_features(images)
        texts = loss.text_features(torch.cat([objective.ids(captions, "cpu"), objective.ids(targets, "cpu")]))
    text_direction = texts[len(captions) :] - texts[: len(captions)]

    def direction_miss(generator):
        decoded = one_step_predictions(parts, images, context, generator)
        image_direction = loss.image_features(decoded) - source
        return (1 - torch.nn.functional.cosine_similarity(image_direction, text_direction, dim=-1)).mean()

    rows = [probe(parts, batch, objective, settings, direction_miss, seed) for seed in PROBE_SEEDS]
    print("\n" + table("edit term vs epsilon term, held-out 1 - CLIP-direction score", rows))
    assert_the_term_works(rows)


def test_augmentation_moves_the_landmarks_with_the_face():
    from comfyui_diffferv.specialize.data import augment_faces, face_augmentation
    from comfyui_diffferv.specialize.objectives import move_landmarks

    torch.manual_seed(3)
    images = torch.full((2, 3, 64, 64), -1.0)
    points = torch.tensor([[20.0, 30.0], [41.0, 22.0], [33.0, 45.0], [25.0, 18.0], [44.0, 40.0]])
    for x, y in points.long().tolist():
        images[:, :, y - 1 : y + 2, x - 1 : x + 2] = 1.0
    out, matrices = augment_faces(
        face_augmentation(25.0, (0.8, 1.2), 1.0), images, torch.tensor([True, True])
    )
    moved = move_landmarks(points.expand(2, 5, 2), matrices)
    for image, where in zip(out, moved, strict=True):
        for x, y in where.round().long().tolist():
            assert image[0, y - 1 : y + 2, x - 1 : x + 2].max() > 0.3, (x, y)


@pytest.fixture(scope="module")
def branch_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("branch_files")
    torch.manual_seed(0)
    export(TinyIResNet(), folder / "w600k_r50.onnx")
    (folder / "edits.txt").write_text("# edits\nwith eyeglasses\n\nold\n")
    return {
        "identity": ["--identity-model", str(folder / "w600k_r50.onnx"), "--identity-weight", "0.5"],
        "edit": ["--clip", str(write_tiny_clip(folder / "clip_l.safetensors")), "--edit-phrases", str(folder / "edits.txt")],
    }  # fmt: skip


@pytest.fixture(scope="module")
def branch_runs(branch_inputs, tiny_checkpoint, portraits, tmp_path_factory) -> dict[str, Path]:
    """Each branch's two steps through the command (identity exports in diffusers' key layout, edit in
    ComfyUI's)."""
    runs = {}
    for branch in ("identity", "edit"):
        output = tmp_path_factory.mktemp(f"branch_{branch}")
        run_command(
            train_arguments(tiny_checkpoint, portraits, output, 2, *branch_arguments(branch, branch_inputs))
        )
        runs[branch] = output
    return runs


def branch_arguments(branch: str, branch_inputs) -> list[str]:
    layout = "diffusers" if branch == "identity" else "comfyui"
    small = ["--batch-size", "2", "--micro-batch", "1", "--save-layout", layout, "--name", branch]
    return [*small, "--branch", branch, "--max-image-timestep", "999", *branch_inputs[branch]]


@pytest.mark.parametrize("branch", ["identity", "edit"])
def test_each_branch_trains_through_the_command_and_resumes_exactly(
    branch, branch_inputs, branch_runs, comfy, tiny_checkpoint, portraits, tmp_path, capsys, monkeypatch
):
    """Two steps in one go, and one step then resumed to two: same losses (image term included) and
        weights; the export says which branch and losses made it, and Load Specialized UNet loads it and shows
        that. The InsightFace licence is printed once per run (identity branch with an ONNX file); the faces
    are found once per image (OUTPUT/face_landmarks.json), not again when resuming."""
    common = branch_arguments(branch, branch_inputs)
    straight, resumed = branch_runs[branch], tmp_path / "resumed"
    capsys.readouterr()
    run_command(train_arguments(tiny_checkpoint, portraits, resumed, 1, *common))
    err = capsys.readouterr().err
    assert err.count("non-commercial research use only") == (1 if branch == "identity" else 0)
    from comfyui_diffferv.faces.dlib_models import FaceModels

    searches = []
    monkeypatch.setattr(FaceModels, "main_face", lambda self, image: searches.append(image))
    run_command(train_arguments(tiny_checkpoint, portraits, resumed, 2, *common, "--resume"))
    assert searches == []  # the landmarks found by the first run are reused (identity) or never needed (edit)
    if branch == "identity":
        found = json.loads((resumed / "face_landmarks.json").read_text())
        assert len(found) == 6 and all(len(points) == 5 for points in found.values())
    rows = {p: list(csv.reader(open(p / "loss.csv"))) for p in (straight, resumed)}  # noqa: SIM115
    assert [r[0] for r in rows[straight]] == [r[0] for r in rows[resumed]] == ["1", "2"]
    assert all(len(r) == 3 for r in rows[straight])  # step, total loss, image-space term
    assert sum(float(r[2]) for r in rows[straight]) > 0  # max timestep 999: the image term acts
    for a, b in zip(rows[straight], rows[resumed], strict=True):
        assert [float(x) for x in b[1:]] == pytest.approx([float(x) for x in a[1:]], rel=1e-4)
    a = safetensors.torch.load_file(str(straight / f"{branch}.safetensors"))
    b = safetensors.torch.load_file(str(resumed / f"{branch}.safetensors"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=key)
    with safetensors.safe_open(str(straight / f"{branch}.safetensors"), "pt") as f:
        metadata = f.metadata()
    assert metadata["diffferv.branch"] == branch
    expected = "0.5 identity cosine distance (w600k_r50.onnx)" if branch == "identity" else "directional CLIP"
    assert expected in metadata["diffferv.losses"] and "t <= 999" in metadata["diffferv.losses"]
    state = json.loads((resumed / "training_state" / "state.json").read_text())
    assert state["settings"]["branch"] == branch

    name = f"branch-{branch}.safetensors"
    shutil.copy(straight / f"{branch}.safetensors", comfy.workdir / "models" / "diffusion_models" / name)
    (model,), ui = comfy.run_node("DiffFERV_LoadSpecializedUNet", unet_name=name)
    assert model.model.diffusion_model.model_channels == 32
    text = ui["text"][0]
    use = "for the inversion (DDIM Invert" if branch == "identity" else "for the sampler (Preservation Inject"
    assert f"{branch} branch: IP-FaceDiff's" in text and use in text and metadata["diffferv.losses"] in text
    assert "step 2, base tiny_sd15.safetensors, 6 face / 2 general pairs" in text


def test_identity_and_edit_unets_run_in_the_two_unet_graph(comfy, tiny_sd15, input_clip, branch_runs):
    """The identity export into DDIM Invert With Cache, the edit export into Preservation Inject Sampler
    (both through Load Specialized UNet and Apply Temporal Attention), on the demo clip's frames: the edit
    runs in both cache modes, and the two modes agree (the features come from the identity UNet either way:
    stored during the inversion, or recomputed by it at each sampling step)."""
    from test_context_windows import edit, invert, load_clip, temporal

    clip = load_clip(comfy, tiny_sd15, input_clip, 4)
    models = {}
    for branch, output in branch_runs.items():
        name = f"graph-{branch}.safetensors"
        shutil.copy(output / f"{branch}.safetensors", comfy.workdir / "models" / "diffusion_models" / name)
        (loaded,), _ = comfy.run_node("DiffFERV_LoadSpecializedUNet", unet_name=name)
        models[branch] = temporal(comfy, loaded, clip.trajectories)
    edits = {}
    for mode in ("store", "recompute"):
        inversion, _ = invert(comfy, clip, models["identity"], mode, steps=3)
        edits[mode] = edit(comfy, clip, models["edit"], inversion)
        assert edits[mode].shape == clip.latent["samples"].shape and torch.isfinite(edits[mode]).all()
    scale = edits["recompute"].abs().max()  # these UNets' latents reach about 20: the tolerance is relative
    assert (edits["store"] - edits["recompute"]).abs().max() < 1e-3 * scale  # fp16 store vs fp32 recompute


def test_gradient_checkpointing_in_the_decode_gives_the_same_training(
    branch_inputs, branch_runs, tiny_checkpoint, portraits, tmp_path, monkeypatch
):
    """With --gradient-checkpointing on (the default on a GPU) the VAE decode of the prediction runs under
    checkpointing too, and the identity branch's losses are those of the run without it."""
    import torch.utils.checkpoint

    calls = []
    checkpoint = torch.utils.checkpoint.checkpoint

    def counted(function, *args, **kwargs):
        calls.append(type(getattr(function, "__self__", function)).__name__)
        return checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counted)
    arguments = [*branch_arguments("identity", branch_inputs), "--gradient-checkpointing", "on"]
    run_command(train_arguments(tiny_checkpoint, portraits, tmp_path, 2, *arguments))
    assert {"UpDecoderBlock2D", "BasicTransformerBlock"} <= set(calls), sorted(set(calls))  # VAE and UNet
    with open(tmp_path / "loss.csv") as a, open(branch_runs["identity"] / "loss.csv") as b:
        checkpointed, plain = list(csv.reader(a)), list(csv.reader(b))
    for x, y in zip(checkpointed, plain, strict=True):
        assert [float(v) for v in x[1:]] == pytest.approx([float(v) for v in y[1:]], rel=1e-4)
