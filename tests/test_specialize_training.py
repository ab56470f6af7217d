"""The `specialize` training command: base-model loading offline, data checks, training, resume."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from conftest import ROOT
from specialize_fixtures import (
    other_family_unet,
    run_command,
    train_arguments,
    write_dataset,
    write_tiny_captioner,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def loss_rows(output) -> list[tuple[int, float]]:
    with open(output / "loss.csv") as f:
        return [(int(step), float(loss)) for step, loss in csv.reader(f)]


def test_training_lowers_the_loss_and_exports_checkpoints(trained):
    losses = trained.losses
    assert len(losses) == 24 and all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6
    assert last < 0.85 * first, f"loss did not go down: first steps {losses[:6]}, last steps {losses[-6:]}"
    assert [step for step, _ in loss_rows(trained.output)] == list(range(1, 25))
    names = sorted(p.name for p in trained.output.glob("*.safetensors"))
    assert names == ["faces-step000008.safetensors", "faces-step000016.safetensors", "faces.safetensors"]
    with safetensors.safe_open(str(trained.output / "faces.safetensors"), "pt") as f:
        assert f.metadata()["diffferv.step"] == "24" and f.metadata()["diffferv.key_layout"] == "comfyui"
        assert "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight" in f.keys()  # noqa: SIM118
    state = json.loads((trained.output / "training_state" / "state.json").read_text())
    assert state["step"] == 24 and state["samples"] == 24 * 4


def test_resume_continues_from_the_saved_step_exactly(resumed_runs, tiny_checkpoint, portraits, capsys):
    """2 steps + resume to 4 gives the same losses and weights as 4 steps in one go (RNG, optimizer and
    data position restored); loss.csv loses rows past the saved step. A fresh run into the same output
    is refused."""
    assert len(resumed_runs.resumed_losses) == 2  # only steps 3 and 4 ran after resuming
    straight_rows, resumed_rows = loss_rows(resumed_runs.straight), loss_rows(resumed_runs.resumed)
    assert [s for s, _ in resumed_rows] == [s for s, _ in straight_rows] == [1, 2, 3, 4]
    assert [loss for _, loss in resumed_rows] == pytest.approx([loss for _, loss in straight_rows], rel=1e-5)
    a = safetensors.torch.load_file(str(resumed_runs.straight / "faces-d.safetensors"))
    b = safetensors.torch.load_file(str(resumed_runs.resumed / "faces-d.safetensors"))
    assert a.keys() == b.keys() and "conv_in.weight" in a  # diffusers layout
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    from comfyui_diffferv.specialize.command import main

    assert main(train_arguments(tiny_checkpoint, portraits, resumed_runs.resumed, 6)) == 2
    assert "already holds a training state: pass --resume" in capsys.readouterr().err


def test_single_file_base_equals_comfyui_models(tiny_checkpoint):
    """The command's offline SD1.5 loader (written-down configs + diffusers' key conversion) gives models
    that compute what ComfyUI's own SD1.5 models compute from the same weights."""
    import comfy.model_management as mm
    from comfy_harness import build_clip, build_unet, build_vae
    from comfyui_diffferv.specialize.sd15_diffusers import load_base

    parts = load_base(tiny_checkpoint.path, tiny_checkpoint.comfyui / "comfy" / "sd1_tokenizer")
    unet, clip, vae = build_unet(seed=10), build_clip(seed=11), build_vae(seed=12)  # what the file holds
    caption = "a photo of a woman with curly hair"
    with torch.no_grad():
        ours = parts.encode_text([caption])
        theirs = clip.encode_from_tokens_scheduled(clip.tokenize(caption))[0][0]
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)

        image = torch.rand(1, 64, 96, 3)
        latent = parts.vae.encode(image.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean
        torch.testing.assert_close(latent, vae.encode(image), rtol=1e-4, atol=1e-4)

        x, t = torch.randn(2, 4, 8, 12), torch.tensor([20, 700])
        mm.load_models_gpu([unet])
        expected = unet.model.diffusion_model(x, timesteps=t, context=ours.expand(2, -1, -1))
        torch.testing.assert_close(
            parts.unet(x, t, encoder_hidden_states=ours.expand(2, -1, -1)).sample, expected
        )


def test_diffusers_folder_base_loads_offline(tiny_checkpoint, tmp_path):
    from comfyui_diffferv.specialize.sd15_diffusers import load_base

    parts = load_base(tiny_checkpoint.path, tiny_checkpoint.comfyui / "comfy" / "sd1_tokenizer")
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        getattr(parts, name).save_pretrained(tmp_path / name)
    again = load_base(tmp_path, None)  # tokenizer from the folder itself
    with torch.no_grad():
        torch.testing.assert_close(again.encode_text(["a face"]), parts.encode_text(["a face"]))
    for key, value in parts.unet.state_dict().items():
        assert torch.equal(again.unet.state_dict()[key], value), key
    (tmp_path / "vae" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"vae/config.json missing"):
        load_base(tmp_path, None)


def test_bad_files_are_reported_by_name_skipped_or_refused(tiny_checkpoint, tmp_path, capsys):
    data = write_dataset(tmp_path / "data")
    (data.faces / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (data.faces / "nocaption.png").write_bytes((data.faces / "face_0.png").read_bytes())
    with open(data.faces / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"file_name": "gone.png", "text": "a face"}) + "\n")
    output = tmp_path / "out"
    arguments = train_arguments(tiny_checkpoint, data, output, 1, "--batch-size", "2", "--micro-batch", "2")
    from comfyui_diffferv.specialize.command import main

    assert main([*arguments, "--strict"]) == 2
    err = capsys.readouterr().err
    assert "refusing to train" in err and "--strict" in err
    report = (output / "data_report.txt").read_text()
    assert "broken.jpg: unreadable image" in report
    assert "nocaption.png: no caption: add nocaption.txt" in report
    assert "gone.png: listed in metadata.jsonl but no such image" in report
    assert not list(output.glob("*.safetensors"))

    assert len(run_command(arguments)) == 1  # without --strict: skipped, listed, trained on the rest
    assert "3 unusable files (skipping them" in capsys.readouterr().err
    with safetensors.safe_open(str(output / "diffferv-faces.safetensors"), "pt") as f:
        assert f.metadata()["diffferv.faces"] == "6" and f.metadata()["diffferv.general"] == "2"

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert main([*arguments, "--faces", str(empty)]) == 2
    assert "no images found" in capsys.readouterr().err
    assert main([*arguments[:4], *arguments[6:]]) == 2  # no --general, 10% general share by default
    assert "pass --general FOLDER, or --general-share 0" in capsys.readouterr().err


def test_caption_model_captions_what_lacks_a_caption_from_local_files_only(tiny_checkpoint, tmp_path, capsys):
    from comfyui_diffferv.specialize.command import main

    data = write_dataset(tmp_path / "data")
    for name in ("face_0.txt", "face_1.txt"):
        (data.faces / name).unlink()  # two images without a caption
    output = tmp_path / "out"
    arguments = [
        *train_arguments(tiny_checkpoint, data, output, 1),
        "--caption-model",
        str(tmp_path / "blip"),
    ]
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert "blip: no config.json" in err and "nothing is downloaded" in err

    write_tiny_captioner(tmp_path / "blip")
    assert main(arguments) == 0
    generated = [json.loads(line) for line in (output / "generated_captions.jsonl").read_text().splitlines()]
    assert sorted(Path(g["file_name"]).name for g in generated) == ["face_0.png", "face_1.png"]
    assert all(g["text"].startswith("a photo of ") for g in generated)  # BLIP-style prefix, continued
    with safetensors.safe_open(str(output / "diffferv-faces.safetensors"), "pt") as f:
        assert f.metadata()["diffferv.faces"] == "6"
    shutil.rmtree(tmp_path / "blip")  # a second run reuses the captions: no model needed
    assert main([*arguments, "--steps", "2", "--resume"]) == 0


def test_mixed_sampler_share_and_reproducibility():
    from comfyui_diffferv.specialize.data import MixedSampler

    sampler = MixedSampler(faces=90, general=40, general_share=0.1, seed=3)
    assert sampler.epoch_length == 100
    stream = iter(sampler)
    epochs = [torch.tensor([next(stream) for _ in range(100)]) for _ in range(3)]
    for epoch in epochs:
        assert sorted(epoch[epoch < 90].tolist()) == list(range(90))  # every face once per epoch
        general = epoch[epoch >= 90]
        assert len(general) == 10 and len(set(general.tolist())) == 10  # 10%, no repeats (40 available)
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled each epoch
    resumed = iter(MixedSampler(faces=90, general=40, general_share=0.1, seed=3, start=137))
    assert [next(resumed) for _ in range(63)] == torch.cat(epochs)[137:200].tolist()
    few = MixedSampler(faces=90, general=4, general_share=0.1, seed=0).epoch(0)
    assert (few >= 90).sum() == 10 and set((few[few >= 90] - 90).tolist()) <= set(range(4))


def test_augmentation_rotates_and_zooms_faces_only():
    from comfyui_diffferv.specialize.data import augment_faces, face_augmentation

    torch.manual_seed(0)
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    is_face = torch.tensor([True, False, True, True, False, True])
    out, matrices = augment_faces(face_augmentation(20.0, (0.7, 1.3), 1.0), images, is_face)
    assert out.shape == images.shape and matrices.shape == (6, 3, 3)
    assert torch.equal(matrices[~is_face], torch.eye(3).expand(2, 3, 3))
    assert (matrices[is_face] - torch.eye(3)).abs().amax((1, 2)).min() > 0.01
    assert torch.equal(out[~is_face], images[~is_face])
    changed = (out[is_face] - images[is_face]).abs().flatten(1).mean(1)
    assert (changed > 0.05).all(), changed
    assert out.min() >= -1.0 - 1e-4 and out.max() <= 1.0 + 1e-4  # reflection padding adds no new values
    identity, _ = augment_faces(face_augmentation(0.0, (1.0, 1.0), 1.0), images, is_face)
    torch.testing.assert_close(identity, images, atol=1e-4, rtol=0)


def test_command_runs_from_the_pack_folder_without_comfyui(portraits, tmp_path):
    """`python <pack> specialize` imports no ComfyUI module, and refuses an SDXL base with the reason."""
    script = f"""
import runpy, sys
commands = runpy.run_path({str(ROOT / "__main__.py")!r})
for name in ("specialize.command", "specialize.sd15_diffusers", "specialize.train", "specialize.data",
             "specialize.captioning", "specialize.flags", "specialize.branches", "specialize.preparation",
             "specialize.comfy_export", "unet.files", "unet.sd15", "unet.comfy_keys"):
    commands["import_command"](name)
bad = sorted(m for m in sys.modules if m == "comfy" or m.startswith(("comfy.", "comfy_api", "folder_paths")))
assert not bad, bad
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    sdxl = tmp_path / "sdxl_checkpoint.safetensors"
    weights = {"model.diffusion_model." + k: v for k, v in other_family_unet("sdxl", "ldm").items()}
    safetensors.torch.save_file(weights, str(sdxl))
    command = [sys.executable, str(ROOT), "specialize", "--base", str(sdxl), "--faces", str(portraits.faces)]
    command += ["--general-share", "0", "--output", str(tmp_path / "out"), "--steps", "1"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "sdxl_checkpoint.safetensors: not an SD1.5 UNet" in result.stderr
    assert "2048-d context" in result.stderr and "looks like an SDXL UNet" in result.stderr


@pytest.mark.slow
def test_full_size_single_file_checkpoint_loads_with_the_written_down_sd15_configs(sd15_checkpoint):
    """The full-size random SD1.5 checkpoint (real key layout) fills the built-in SD1.5 configs exactly:
    every weight has its place and shape (checked by the loader), and the parameter counts are SD1.5's."""
    from comfy_harness import host_dir
    from comfyui_diffferv.specialize.sd15_diffusers import load_base

    parts = load_base(sd15_checkpoint, host_dir() / "comfy" / "sd1_tokenizer")
    counts = {
        name: sum(p.numel() for p in getattr(parts, name).parameters())
        for name in ("unet", "vae", "text_encoder")
    }
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
    assert parts.unet.config.block_out_channels == (320, 640, 1280, 1280)


def test_gradient_checkpointing_gives_the_same_training(
    resumed_runs, tiny_checkpoint, portraits, tmp_path, capsys, monkeypatch
):
    """Gradient checkpointing (on by default with a GPU) recomputes activations and must not change the
    result: the first two losses equal those of the run without it. Mixed precision needs a GPU."""
    import torch.utils.checkpoint
    from comfyui_diffferv.specialize.command import main

    calls = []
    checkpoint = torch.utils.checkpoint.checkpoint

    def counted(*args, **kwargs):
        calls.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counted)
    small = ("--batch-size", "2", "--micro-batch", "1", "--save-layout", "diffusers", "--name", "faces-d")
    arguments = train_arguments(tiny_checkpoint, portraits, tmp_path / "out", 2, *small)
    run_command([*arguments, "--gradient-checkpointing", "on"])
    assert calls, "no UNet block ran under torch.utils.checkpoint"
    checkpointed = [loss for _, loss in loss_rows(tmp_path / "out")]
    assert checkpointed == pytest.approx([loss for _, loss in loss_rows(resumed_runs.straight)][:2], rel=1e-5)
    assert main([*arguments, "--output", str(tmp_path / "bf16"), "--mixed-precision", "bf16"]) == 2
    assert "mixed precision bf16 needs a CUDA GPU" in capsys.readouterr().err
