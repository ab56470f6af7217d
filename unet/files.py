"""UNet weight files: reading them safely.

Plain torch + safetensors (no ComfyUI import): the LoadSpecializedUNet node and the specialization
training command (which runs outside ComfyUI) share it; sd15.py judges what a file holds.

- Only safetensors files are read. ``.ckpt``/``.pt``/``.bin`` files are Python pickles, which can run
  code when loaded; they are refused with a message saying how to convert them.
- `read_header` reads a file's tensor names, dtypes and shapes without loading it and checks that the
  file is whole (a cut-short download is named as such).
- `unet_part` takes the UNet out of a single-file checkpoint; `check_finite` refuses NaN/inf weights.
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


class UNetFileError(ValueError):
    """A weight file that cannot be used: the message names the file, what was found and what to do."""


MAX_HEADER_BYTES = 100 * 2**20  # the safetensors format's own limit


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


def unet_part(state_dict: Mapping[str, torch.Tensor | TensorInfo]) -> dict[str, torch.Tensor | TensorInfo]:
    """The UNet's entries without their prefix: a full SD checkpoint keeps them under
    ``model.diffusion_model.`` (its CLIP and VAE entries are dropped); a UNet-only file is returned as is."""
    inner = {k[len(LDM_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(LDM_PREFIX)}
    return inner or dict(state_dict)


def check_finite(state_dict: Mapping[str, torch.Tensor], name: str) -> None:
    """Raise UNetFileError naming the first tensors with NaN/inf values (a corrupt or diverged file)."""
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UNetFileError(
            f"{name}: {len(bad)} tensors hold NaN or infinite values (e.g. {', '.join(sorted(bad)[:3])}): "
            "the file is corrupt or training diverged. Use an earlier checkpoint."
        )
