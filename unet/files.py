"""UNet weight files: reading them safely and telling whether they hold an SD1.5-layout UNet.

Plain torch + safetensors (no ComfyUI import): the LoadSpecializedUNet node and the specialization
training command (which runs outside ComfyUI) share it.

- Only safetensors files are read. ``.ckpt``/``.pt``/``.bin`` files are Python pickles, which can run
  code when loaded; they are refused with a message saying how to convert them.
- `read_header` reads a file's tensor names, dtypes and shapes without loading it and checks that the
  file is whole (a cut-short download is named as such); `check_sd15_checkpoint` judges a single-file
  checkpoint from that header alone, before any loader opens it.
- A UNet comes in one of two key layouts: ComfyUI/ldm (``input_blocks.0.0.weight``, as inside an SD1.5
  checkpoint under ``model.diffusion_model.``) or diffusers (``conv_in.weight``, as in a diffusers
  ``unet/`` folder). `describe_unet` reads the handful of keys that tell the model family apart in both.
- "SD1.5-compatible" is judged by layout, not size: 768-d cross-attention context, 4 input channels,
  no pooled-text/size embedding, 1x1-convolution ``proj_in`` and (checked against a reference model by
  the callers, with `shape_problems`) SD1.5's blocks; the base channel count may differ (the tests use
  32 instead of 320).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import safetensors
import torch

SAFE_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
LDM_PREFIX = "model.diffusion_model."  # where a single-file SD checkpoint keeps its UNet
SD15_CONTEXT_DIM = 768  # CLIP ViT-L/14 text width
SD15_MODEL_CHANNELS = 320
SD15_CHANNEL_MULT = (1, 2, 4, 4)
SD15_HEADS = 8
# Metadata keys that may state the prediction target (ours, and the Stability AI model spec's).
PREDICTION_METADATA = ("diffferv.prediction_type", "modelspec.prediction_type")
EPSILON_NAMES = ("epsilon", "eps")


class UNetFileError(ValueError):
    """A weight file that cannot be used: the message names the file, what was found and what to do."""


MAX_HEADER_BYTES = 100 * 2**20  # the safetensors format's own limit
CHECKPOINT_PARTS = (("CLIP text encoder", "cond_stage_model."), ("VAE", "first_stage_model."))
"""What a single-file SD checkpoint holds besides its UNet: (part, key prefix)."""
DIT_FAMILIES = (("double_blocks.", "Flux"), ("joint_blocks.", "SD3"))
"""Key prefixes of diffusion transformers (no UNet), with their family name for messages."""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as a safetensors header describes it (nothing loaded)."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)


def check_suffix(path: Path, name: str) -> None:
    """Refuse what is not a .safetensors file by its name, before anything opens it (pickles can run
    code when loaded)."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise UNetFileError(
            f"{name}: only .safetensors files are loaded; {suffix} files are Python pickles, which can run "
            "arbitrary code when opened: convert it to .safetensors once with a tool you trust (e.g. load it "
            "with torch.load(..., weights_only=True) and write it with safetensors.torch.save_file), or get "
            "the model's .safetensors release."
        )
    if suffix not in SAFE_SUFFIXES:
        raise UNetFileError(
            f"{name}: only .safetensors model files are loaded, not {suffix or 'this'} files."
        )


def read_header(path: Path, name: str | None = None) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """The tensors (name -> TensorInfo) and metadata of a safetensors file, read from its header only
    (memory: the header, at most MAX_HEADER_BYTES). Raises UNetFileError, naming the file as `name`
    (default: its file name), for other formats, a missing file, a file shorter than its header says (an
    interrupted download or copy) and a file that is no safetensors file at all."""
    path = Path(path)
    name = name or path.name
    check_suffix(path, name)
    if not path.is_file():
        raise UNetFileError(f"{name}: file not found")
    size = path.stat().st_size
    with path.open("rb") as file:
        prefix = file.read(8)
        header_size = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
        raw = file.read(header_size) if 0 < header_size <= MAX_HEADER_BYTES else b""
    if size == 0:
        raise UNetFileError(f"{name}: the file is empty (0 bytes): download it again")
    try:
        if not raw:
            raise ValueError("no header")
        header = json.loads(raw)
        metadata = {str(k): str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
        tensors = {
            key: TensorInfo(str(v["dtype"]), tuple(int(n) for n in v["shape"])) for key, v in header.items()
        }
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        if 8 <= size < 8 + header_size <= 8 + MAX_HEADER_BYTES:
            raise UNetFileError(
                f"{name}: the file is incomplete ({size} of at least {8 + header_size} bytes): download it again"
            ) from None
        raise UNetFileError(
            f"{name} is not a safetensors file (its header is unreadable): it is corrupt or of another format; "
            "download or export it again"
        ) from None
    expected = 8 + header_size + end
    if size < expected:
        raise UNetFileError(f"{name}: the file is incomplete ({size} of {expected} bytes): download it again")
    if size > expected:
        raise UNetFileError(
            f"{name}: the file has {size} bytes where its header describes {expected}: it is corrupt; "
            "download it again"
        )
    return tensors, metadata


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a safetensors file (on the CPU) and its metadata. Never unpickles: other formats
    are refused. A truncated or corrupt file raises UNetFileError naming the file. Memory: the file."""
    path = Path(path)
    read_header(path)
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not iterable)
    except safetensors.SafetensorError as error:
        raise UNetFileError(
            f"{path.name} is not a readable safetensors file ({error}; {path.stat().st_size} bytes): it is "
            "corrupt. Download or export it again."
        ) from error
    return tensors, metadata


def check_sd15_file(path: Path, name: str | None = None) -> dict[str, TensorInfo]:
    """Raise UNetFileError unless `path` is a whole .safetensors file holding an SD1.5 UNet (UNet-only or
    a full checkpoint), judged from its header alone (see `read_header`; messages name it as `name`).
    Returns the header's tensors."""
    name = name or Path(path).name
    tensors, metadata = read_header(path, name)
    check_sd15(describe_unet(unet_part(tensors), name), metadata, name)
    return tensors


def check_sd15_checkpoint(path: Path, name: str | None = None) -> None:
    """`check_sd15_file`, and the file must be a full single-file checkpoint: UNet, CLIP text encoder
    and VAE."""
    name = name or Path(path).name
    tensors = check_sd15_file(path, name)
    missing = [part for part, prefix in CHECKPOINT_PARTS if not any(k.startswith(prefix) for k in tensors)]
    if missing:
        raise UNetFileError(
            f"{name} holds no {' and no '.join(missing)}: it is not a full SD1.5 checkpoint (UNet, CLIP and "
            "VAE in one file)."
        )


def unet_part(state_dict: Mapping[str, torch.Tensor | TensorInfo]) -> dict[str, torch.Tensor | TensorInfo]:
    """The UNet's entries without their prefix: a full SD checkpoint keeps them under
    ``model.diffusion_model.`` (its CLIP and VAE entries are dropped); a UNet-only file is returned as is."""
    inner = {k[len(LDM_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(LDM_PREFIX)}
    return inner or dict(state_dict)


@dataclass(frozen=True)
class UNetLayout:
    """What a UNet state dict says about its architecture (read from a few keys, either key layout)."""

    key_layout: str  # "ldm" (ComfyUI / original SD) or "diffusers"
    model_channels: int  # width of the first level (SD1.5: 320)
    in_channels: int  # latent channels in (SD1.5: 4; inpainting: 9)
    context_dim: int | None  # width of the cross-attention context (None: no cross-attention)
    adm_channels: int | None  # input width of a pooled-text/size embedding (SDXL: 2816), None if absent
    linear_proj: bool | None  # transformer proj_in is a Linear (SD2, SDXL) rather than a 1x1 conv

    def summary(self) -> str:
        parts = [
            f"{self.key_layout} key layout",
            f"{self.model_channels} base channels",
            f"{self.in_channels} input channels",
            "no cross-attention" if self.context_dim is None else f"{self.context_dim}-d context",
        ]
        if self.adm_channels is not None:
            parts.append(f"pooled/size embedding of {self.adm_channels} inputs")
        if self.linear_proj is not None:
            parts.append("linear proj_in" if self.linear_proj else "conv proj_in")
        return ", ".join(parts)

    def family(self) -> str:
        """The model family these facts point to, for error messages ('' when none is recognised)."""
        if self.context_dim == 2048 or self.adm_channels == 2816:
            return "SDXL"
        if self.context_dim == 1280 and self.adm_channels == 2560:
            return "SDXL refiner"
        if self.context_dim == 1024:
            return "SD2.x unCLIP" if self.adm_channels else "SD2.x"
        if self.in_channels == 9:
            return "inpainting"
        if self.in_channels == 8:
            return "instruct-pix2pix"
        return ""

    def sd15_problems(self) -> list[str]:
        """How this layout differs from SD1.5's (empty when it matches)."""
        problems = []
        if self.context_dim != SD15_CONTEXT_DIM:
            problems.append(f"cross-attention context must be {SD15_CONTEXT_DIM}-d (CLIP-L)")
        if self.in_channels != 4:
            problems.append("it must take 4 latent channels")
        if self.adm_channels is not None:
            problems.append("SD1.5 has no pooled-text/size embedding")
        if self.linear_proj:
            problems.append("SD1.5's transformer proj_in is a 1x1 convolution")
        if self.model_channels % 32:
            problems.append("base channels must be a multiple of 32 (GroupNorm groups)")
        return problems


# (ldm key, diffusers keys) for the facts `describe_unet` reads
_CONV_IN = ("input_blocks.0.0.weight", ("conv_in.weight",))
_ADM = ("label_emb.0.0.weight", ("add_embedding.linear_1.weight", "class_embedding.linear_1.weight"))


def describe_unet(state_dict: Mapping[str, torch.Tensor | TensorInfo], name: str) -> UNetLayout:
    """Read the architecture facts of a UNet state dict (prefix already removed, see `unet_part`), or of
    a header's TensorInfos (only shapes are read).
    Raises UNetFileError when the file holds no UNet at all (a LoRA, a text encoder, a DiT...)."""
    if _CONV_IN[0] in state_dict:
        layout, conv_in = "ldm", state_dict[_CONV_IN[0]]
        adm = state_dict.get(_ADM[0])
    elif _CONV_IN[1][0] in state_dict:
        layout, conv_in = "diffusers", state_dict[_CONV_IN[1][0]]
        adm = next((state_dict[k] for k in _ADM[1] if k in state_dict), None)
    else:
        keys = sorted(state_dict)
        family = next(
            (family for prefix, family in DIT_FAMILIES if any(k.startswith(prefix) for k in keys)), ""
        )
        if family:
            raise UNetFileError(
                f"{name}: not an SD1.5 UNet. Found a {family} diffusion transformer ({len(keys)} tensors, keys "
                f"like {keys[0]}). DiffFERV edits with SD1.5; load other models with ComfyUI's Load "
                "Diffusion Model or Load Checkpoint nodes."
            )
        if any("lora" in k for k in keys):
            what = "it holds LoRA weights: load it with a LoRA loader (after this node, on its MODEL)"
        else:
            what = f"its keys look like {', '.join(keys[:3]) or '(none)'}"
        raise UNetFileError(
            f"{name}: no UNet found (neither ComfyUI/ldm 'input_blocks.0.0.weight' nor diffusers "
            f"'conv_in.weight'); {what}."
        )
    context = next((v for k, v in sorted(state_dict.items()) if k.endswith("attn2.to_k.weight")), None)
    proj_in = next((v for k, v in sorted(state_dict.items()) if k.endswith("proj_in.weight")), None)
    return UNetLayout(
        key_layout=layout,
        model_channels=int(conv_in.shape[0]),
        in_channels=int(conv_in.shape[1]),
        context_dim=None if context is None else int(context.shape[1]),
        adm_channels=None if adm is None else int(adm.shape[1]),
        linear_proj=None if proj_in is None else proj_in.ndim == 2,
    )


def check_sd15(layout: UNetLayout, metadata: Mapping[str, str], name: str) -> None:
    """Raise UNetFileError unless the layout facts and the file's stated prediction target are SD1.5's."""
    problems = layout.sd15_problems()
    if problems:
        family = layout.family()
        looks_like = f" This looks like an {family} UNet." if family else ""
        raise UNetFileError(
            f"{name}: not an SD1.5 UNet. Found {layout.summary()}.{looks_like} Needed: "
            f"{'; '.join(problems)}. DiffFERV edits with SD1.5; load other models with ComfyUI's Load "
            "Diffusion Model or Load Checkpoint nodes."
        )
    for key in PREDICTION_METADATA:
        value = metadata.get(key)
        if value is not None and value.lower() not in EPSILON_NAMES:
            raise UNetFileError(
                f"{name}: its metadata says {key}={value}; DiffFERV's inversion and sampling need an "
                "epsilon-prediction SD1.5 UNet."
            )


def check_finite(state_dict: Mapping[str, torch.Tensor], name: str) -> None:
    """Raise UNetFileError naming the first tensors with NaN/inf values (a corrupt or diverged file)."""
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UNetFileError(
            f"{name}: {len(bad)} tensors hold NaN or infinite values (e.g. {', '.join(sorted(bad)[:3])}): "
            "the file is corrupt or training diverged. Use an earlier checkpoint."
        )


def shape_problems(
    found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor | torch.Size], expected_name: str
) -> list[str]:
    """Differences between a state dict and a reference one (missing keys, unexpected keys, shape
    mismatches), each as one line with a few examples; empty when keys and shapes all agree."""

    def shape(v):
        return tuple(v.shape if isinstance(v, torch.Tensor) else v)

    lines = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(found) & set(expected) if shape(found[k]) != shape(expected[k]))
    if missing:
        lines.append(f"{len(missing)} weights of {expected_name} are missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        lines.append(
            f"{len(unexpected)} weights are not in {expected_name} (e.g. {', '.join(unexpected[:3])})"
        )
    if wrong:
        examples = ", ".join(f"{k}: {shape(found[k])} vs {shape(expected[k])}" for k in wrong[:3])
        lines.append(f"{len(wrong)} weights have other shapes than in {expected_name} (e.g. {examples})")
    return lines


def comfy_key_map(keys, model_channels: int, unet_to_diffusers, name: str) -> dict[str, str]:
    """{diffusers key: ComfyUI key} for the diffusers-layout SD1.5 UNet weights named by `keys`, from
    ComfyUI's converter `unet_to_diffusers` (comfy.utils, passed in: this module does not import ComfyUI).
    Raises UNetFileError when a key has no place in an SD1.5 UNet."""
    key_map = unet_to_diffusers(comfy_sd15_unet_config(model_channels))
    unknown = sorted(set(keys) - set(key_map))
    if unknown:
        raise UNetFileError(
            f"{name}: {len(unknown)} diffusers weights have no place in an SD1.5 UNet "
            f"(e.g. {', '.join(unknown[:3])}); this is not an SD1.5-layout UNet."
        )
    return {k: key_map[k] for k in keys}


def comfy_sd15_unet_config(model_channels: int = SD15_MODEL_CHANNELS) -> dict:
    """ComfyUI's unet_config of an SD1.5 UNet (as its model detection gives it) at a given base width;
    `comfy.utils.unet_to_diffusers` turns it into the diffusers -> ComfyUI key map."""
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "out_channels": 4,
        "use_spatial_transformer": True,
        "legacy": False,
        "adm_in_channels": None,
        "in_channels": 4,
        "model_channels": model_channels,
        "num_res_blocks": [2, 2, 2, 2],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "channel_mult": list(SD15_CHANNEL_MULT),
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": False,
        "context_dim": SD15_CONTEXT_DIM,
        "num_heads": SD15_HEADS,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
    }


BRANCH_USES = {
    "specialization": "face-specialized SD1.5 UNet (DiffFERV): use it for both the inversion and the sampler",
    "identity": "IP-FaceDiff's identity-preserving UNet: use it for the inversion (DDIM Invert With Cache)",
    "edit": "IP-FaceDiff's edit UNet: use it for the sampler (Preservation Inject Sampler)",
}
"""What each `specialize --branch` export is for."""


def training_summary(metadata: Mapping[str, str]) -> str:
    """What trained a UNet file, from the metadata the `specialize` command writes (branch, losses, step,
    base, data): lines of text; empty for a file that command did not write."""
    if "diffferv.step" not in metadata:
        return ""
    branch = metadata.get("diffferv.branch", "specialization")  # files from before the branches
    lines = [f"{branch} branch: {BRANCH_USES.get(branch, 'unknown branch')}"]
    lines.append(f"losses: {metadata.get('diffferv.losses', 'epsilon')}")
    data = (
        f"{metadata.get('diffferv.faces', '?')} face / {metadata.get('diffferv.general', '?')} general pairs"
    )
    lines.append(f"step {metadata['diffferv.step']}, base {metadata.get('diffferv.base', '?')}, {data}")
    return "\n".join(lines)
