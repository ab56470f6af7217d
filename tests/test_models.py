"""The random-weight models the other tests stand on: real SD1.5 architecture, ComfyUI's classes."""

import pytest
import torch
from comfy_harness import one_step_txt2img

SD15_ATTN1_KEYS = (
    [("input", i) for i in (1, 2, 4, 5, 7, 8)] + [("middle", 0)] + [("output", i) for i in range(3, 12)]
)


def test_tiny_unet_has_the_16_sd15_self_attention_blocks(tiny_sd15):
    """Patch every SD1.5 attn1 key with a recorder: all 16 fire once per call, with 768-d context in attn2."""
    import comfy.model_management as mm

    calls, contexts = [], []

    def record(q, k, v, extra_options):
        calls.append(
            (
                extra_options["block"],
                extra_options["transformer_index"],
                tuple(extra_options["activations_shape"]),
            )
        )
        from comfy.ldm.modules.attention import optimized_attention

        return optimized_attention(q, k, v, extra_options["n_heads"])

    def record_cross(q, k, v, extra_options):
        contexts.append(k.shape)
        from comfy.ldm.modules.attention import optimized_attention

        return optimized_attention(q, k, v, extra_options["n_heads"])

    patched = tiny_sd15.model.clone()
    for block, index in SD15_ATTN1_KEYS:
        patched.set_model_attn1_replace(record, block, index)
        patched.set_model_attn2_replace(record_cross, block, index)
    mm.load_models_gpu([patched])
    x = torch.randn(2, 4, 16, 24)
    context = torch.randn(2, 77, 768)
    out = patched.model.apply_model(
        x,
        torch.tensor([5.0, 5.0]),
        c_crossattn=context,
        transformer_options=patched.model_options["transformer_options"],
    )
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert sorted({block for block, _, _ in calls}) == sorted(SD15_ATTN1_KEYS)
    assert len(calls) == 16 and sorted(index for _, index, _ in calls) == list(range(16))
    shapes = {block: shape[2:] for block, _, shape in calls}
    assert shapes[("input", 1)] == (16, 24) and shapes[("middle", 0)] == (2, 3)  # H != W kept
    assert len(contexts) == 16 and all(shape[1] == 77 for shape in contexts)
    cross = [m for name, m in patched.model.diffusion_model.named_modules() if name.endswith("attn2.to_k")]
    assert len(cross) == 16 and all(m.in_features == 768 for m in cross)
    # the input model was not touched by patching its clone
    assert "patches_replace" not in tiny_sd15.model.model_options["transformer_options"]


def test_tiny_models_are_deterministic(comfy):
    from comfy_harness import build_unet

    a, b = build_unet(seed=3), build_unet(seed=3)
    for (name, p), (_, q) in zip(
        a.model.diffusion_model.named_parameters(), b.model.diffusion_model.named_parameters(), strict=True
    ):
        assert torch.equal(p, q), name
    assert all(torch.isfinite(p).all() for p in a.model.diffusion_model.parameters())


def test_tiny_clip_and_vae_run_the_real_code_paths(tiny_sd15):
    cond = tiny_sd15.clip.encode_from_tokens_scheduled(tiny_sd15.clip.tokenize("a photo of a woman, smiling"))
    embedding = cond[0][0]
    assert embedding.shape == (1, 77, 768) and torch.isfinite(embedding).all()
    other = tiny_sd15.clip.encode_from_tokens_scheduled(tiny_sd15.clip.tokenize("a photo of an old man"))[0][
        0
    ]
    assert not torch.allclose(embedding, other)
    image = torch.rand(2, 64, 96, 3)
    latent = tiny_sd15.vae.encode(image)
    assert latent.shape == (2, 4, 8, 12)
    decoded = tiny_sd15.vae.decode(latent)
    assert decoded.shape == (2, 64, 96, 3) and torch.isfinite(decoded).all()


@pytest.mark.slow
def test_full_size_checkpoint_loads_through_the_stock_loader_and_samples(comfy, sd15_checkpoint):
    """The random SD1.5 checkpoint in the real key layout: CheckpointLoaderSimple detects SD1.5, and one
    sampling step plus decoding runs at 64x64 (the real 860M-parameter UNet on the CPU)."""
    from safetensors import safe_open

    with safe_open(str(sd15_checkpoint), "pt") as f:
        keys = set(f.keys())
    assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight" in keys
    assert "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight" in keys
    assert "first_stage_model.decoder.up.3.block.2.conv2.weight" in keys
    comfy.folder_paths.add_model_folder_path("checkpoints", str(sd15_checkpoint.parent))
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sd15_checkpoint.name}},
        **one_step_txt2img(model=["1", 0], clip=["1", 1], vae=["1", 2]),
    }
    outputs = comfy.run_prompt(prompt)
    assert outputs["t2i_preview"]["images"], "no image came out"
    (model, _, _), _ = comfy.run_node("CheckpointLoaderSimple", ckpt_name=sd15_checkpoint.name)
    assert type(model.model.model_config).__name__ == "SD15"
    assert model.model.diffusion_model.model_channels == 320
