"""LoadSpecializedUNet inside ComfyUI: what the training command saves loads in both key layouts and
predicts the noise the diffusers model predicts; other model families and broken files are refused."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
from comfy_harness import one_step_txt2img
from specialize_fixtures import other_family_unet

NODE = "DiffFERV_LoadSpecializedUNet"

pytestmark = pytest.mark.usefixtures("single_thread")


def install(comfy, source: Path, name: str, folder: str = "diffusion_models") -> str:
    """Copy a file into one of the in-process ComfyUI's model folders; returns its name there."""
    shutil.copy(source, comfy.workdir / "models" / folder / name)
    return name


def diffusers_unet(state_file: Path):
    """The diffusers UNet the training produced: its fp32 weights from the training state."""
    from comfyui_diffferv.specialize.sd15_diffusers import sd15_unet_config
    from diffusers import UNet2DConditionModel

    weights = safetensors.torch.load_file(str(state_file))
    unet = UNet2DConditionModel(**sd15_unet_config(weights["conv_in.weight"].shape[0]))
    unet.load_state_dict(weights)
    return unet.eval()


def comfy_eps(patcher, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The noise a ComfyUI MODEL predicts for the variance-preserving latent x_t at integer timesteps t:
    ComfyUI works on x = x_t / sqrt(alpha_bar) at sigma = sqrt((1 - alpha_bar) / alpha_bar) and returns
    the denoised x0; eps = (x - x0) / sigma."""
    import comfy.model_management as mm

    mm.load_models_gpu([patcher])
    sigma = patcher.get_model_object("model_sampling").sigmas[t]
    x = x_t * (1 + sigma**2).sqrt()[:, None, None, None]
    denoised = patcher.model.apply_model(
        x, sigma, c_crossattn=context, transformer_options=patcher.model_options["transformer_options"]
    )
    return (x - denoised) / sigma[:, None, None, None]


def random_inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x_t = torch.randn(3, 4, 8, 16, generator=generator)  # H != W
    context = torch.randn(3, 77, 768, generator=generator)
    return x_t, torch.tensor([1, 350, 999]), context


@pytest.mark.parametrize("layout", ["comfyui", "diffusers"])
def test_saved_checkpoint_predicts_the_diffusers_noise(comfy, layout, request):
    """Trained export -> LoadSpecializedUNet (alone) -> same eps as diffusers' UNet2DConditionModel with the
    trained weights, for the same latent, timestep and text embedding; ComfyUI's SD1.5 noise schedule is
    the one the command trains with."""
    from comfyui_diffferv.specialize.sd15_diffusers import sd15_scheduler

    if layout == "comfyui":
        output, export = request.getfixturevalue("trained").output, "faces.safetensors"
    else:
        output, export = request.getfixturevalue("resumed_runs").resumed, "faces-d.safetensors"
    (model,), ui = comfy.run_node(
        NODE, unet_name=install(comfy, output / export, f"final-{layout}.safetensors")
    )
    assert model.model.diffusion_model.model_channels == 32
    assert "specialization branch: face-specialized SD1.5 UNet (DiffFERV)" in ui["text"][0]
    assert "losses: epsilon\n" in ui["text"][0]
    ms = model.get_model_object("model_sampling")
    alphas = sd15_scheduler().alphas_cumprod
    torch.testing.assert_close(1 / (1 + ms.sigmas.double() ** 2), alphas.double(), rtol=1e-6, atol=0)

    unet = diffusers_unet(output / "training_state" / "unet.safetensors")
    x_t, t, context = random_inputs()
    with torch.no_grad():
        expected = unet(x_t, t, encoder_hidden_states=context).sample
        got = comfy_eps(model, x_t, t, context)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=2e-5)
    assert expected.std() > 0.1  # a real prediction, not a constant


def test_applies_onto_a_stock_model_on_a_clone_and_loras_compose(comfy, tiny_sd15, trained, tmp_path):
    """With a MODEL connected, the file's weights replace that model's UNet on a clone (weight patches):
    the input MODEL still predicts what it did, and a LoRA loaded after the node adds its delta."""
    base = tiny_sd15.model
    x_t, t, context = random_inputs(1)
    with torch.no_grad():
        before = comfy_eps(base, x_t, t, context)
    name = install(comfy, trained.output / "faces.safetensors", "applied.safetensors")
    (patched,), _ = comfy.run_node(NODE, unet_name=name, model=base)
    assert patched is not base and not base.patches and len(patched.patches) == 686

    unet = diffusers_unet(trained.output / "training_state" / "unet.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(
            comfy_eps(patched, x_t, t, context), unet(x_t, t, context).sample, rtol=1e-4, atol=2e-5
        )
        torch.testing.assert_close(comfy_eps(base, x_t, t, context), before)  # the input is untouched

    # a rank-2 LoRA on one cross-attention projection, in ComfyUI's lora_unet_* naming
    generator = torch.Generator().manual_seed(5)
    up, down = torch.randn(32, 2, generator=generator) * 0.3, torch.randn(2, 768, generator=generator) * 0.3
    lora_key = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k"
    lora = {
        f"{lora_key}.lora_up.weight": up,
        f"{lora_key}.lora_down.weight": down,
        f"{lora_key}.alpha": torch.tensor(2.0),
    }
    comfy.folder_paths.add_model_folder_path("loras", str(tmp_path))
    safetensors.torch.save_file(lora, str(tmp_path / "one_layer.safetensors"))
    (with_lora,), _ = comfy.run_node(
        "LoraLoaderModelOnly", model=patched, lora_name="one_layer.safetensors", strength_model=0.5
    )
    with torch.no_grad():
        unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight += 0.5 * up @ down
        torch.testing.assert_close(
            comfy_eps(with_lora, x_t, t, context), unet(x_t, t, context).sample, rtol=1e-4, atol=2e-5
        )


def test_finds_files_in_the_checkpoints_folder_and_refuses_a_model_of_another_size(comfy, tiny_checkpoint):
    """A full SD1.5 checkpoint is listed under checkpoints/ and its UNet loads; applying it onto an SD1.5
    MODEL of another width is refused with both shapes named."""
    from comfy import model_patcher, supported_models
    from comfy_harness import sd15_unet_config

    name = install(comfy, tiny_checkpoint.path, "tiny_full.safetensors", "checkpoints")
    schema = comfy.node_class(NODE).GET_SCHEMA()
    assert "checkpoints/" + name in schema.inputs[0].options
    (model,), _ = comfy.run_node(NODE, unet_name="checkpoints/" + name)
    assert model.model.diffusion_model.model_channels == 32
    node = comfy.node_class(NODE)
    before = node.fingerprint_inputs(unet_name="checkpoints/" + name)
    os.utime(comfy.workdir / "models" / "checkpoints" / name, ns=(0, before + 10**9))  # file rewritten
    assert node.fingerprint_inputs(unet_name="checkpoints/" + name) != before

    config = supported_models.SD15(sd15_unet_config(model_channels=64))
    config.set_inference_dtype(torch.float32, None)
    wider = model_patcher.ModelPatcher(config.get_model({}), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(
        ValueError, match=r"does not fit the MODEL input: \d+ weights have other shapes .*\(32,\) vs \(64,\)"
    ):
        comfy.run_node(NODE, unet_name="checkpoints/" + name, model=wider)


@pytest.mark.parametrize(
    ("family", "layout", "found"),
    [
        ("sdxl", "ldm", r"2048-d context, pooled/size embedding of 2816 inputs, linear proj_in"),
        ("sdxl", "diffusers", r"diffusers key layout.*2048-d context, pooled/size embedding of 2816 inputs"),
        ("sd2", "ldm", r"1024-d context, linear proj_in"),
    ],
)
def test_other_model_families_are_refused_with_what_was_found(comfy, tmp_path, family, layout, found):
    path = tmp_path / f"{family}_{layout}.safetensors"
    safetensors.torch.save_file(other_family_unet(family, layout), str(path))
    name = install(comfy, path, path.name)
    label = {"sdxl": "SDXL", "sd2": "SD2.x"}[family]
    with pytest.raises(
        ValueError, match=rf"{name}: not an SD1.5 UNet\. Found .*{found}.*looks like an {label} UNet"
    ):
        comfy.run_node(NODE, unet_name=name)


def test_truncated_nan_and_pickled_files_are_refused(comfy, trained, tmp_path):
    data = (trained.output / "faces.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError,
        match=rf"truncated\.safetensors: the file is incomplete \({len(data) // 2} of {len(data)} bytes\): "
        "download it again",
    ):
        comfy.run_node(NODE, unet_name=install(comfy, truncated, truncated.name))

    weights = safetensors.torch.load_file(str(trained.output / "faces.safetensors"))
    weights["middle_block.1.proj_out.weight"][0, 0] = float("nan")
    diverged = tmp_path / "diverged.safetensors"
    safetensors.torch.save_file(weights, str(diverged))
    with pytest.raises(
        ValueError, match=r"diverged\.safetensors: 1 tensors hold NaN .*middle_block\.1\.proj_out\.weight"
    ):
        comfy.run_node(NODE, unet_name=install(comfy, diverged, diverged.name))

    marker = tmp_path / "unpickled"
    pickled = tmp_path / "specialized.ckpt"
    pickled.write_bytes(pickle.dumps(Touch(marker)))  # loading it with pickle would create `marker`
    with pytest.raises(ValueError, match=r"specialized\.ckpt: only \.safetensors files are loaded.*pickles"):
        comfy.run_node(NODE, unet_name=install(comfy, pickled, pickled.name))
    assert not marker.exists()


class Touch:
    """A pickle payload with a visible side effect: unpickling it creates a file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.slow
def test_full_size_workflow_applies_a_checkpoint_unet_onto_the_stock_loader_model(comfy, sd15_checkpoint):
    """A real workflow at full SD1.5 size: Load Checkpoint -> Load Specialized UNet (MODEL connected, the
    UNet taken from a full checkpoint in the checkpoints folder) -> KSampler -> VAE Decode."""
    comfy.folder_paths.add_model_folder_path("checkpoints", str(sd15_checkpoint.parent))
    name = sd15_checkpoint.name
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}},
        "2": {"class_type": NODE, "inputs": {"unet_name": "checkpoints/" + name, "model": ["1", 0]}},
        **one_step_txt2img(model=["2", 0], clip=["1", 1], vae=["1", 2]),
    }
    outputs = comfy.run_prompt(prompt)
    assert outputs["t2i_preview"]["images"], "no image came out"
