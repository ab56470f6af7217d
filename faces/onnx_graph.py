"""An ONNX graph run by torch: the small set of operators face-recognition networks use, differentiable.

InsightFace's ArcFace files (``w600k_r50.onnx``, ``glintr100.onnx``: iresnet50/100) are convolutions,
batch norms, PReLUs, residual adds, a flatten and a fully connected layer; some begin with their own
Sub/Mul normalisation. ``OnnxGraph(path)`` reads such a file with the ``onnx`` package (PyPI, Apache-2.0;
imported only here, only when a file is read) and runs its nodes in file order (ONNX stores them
topologically sorted) with torch functions, so gradients flow to the input and ``.double()`` /
``.to(device)`` work as for any module. The weights are buffers: the network stays frozen.

A file with an operator outside ``OPERATORS`` is refused before anything runs, naming the operators
(``UnsupportedOnnxError``). Shapes flow as int64 tensors (Shape, Gather, Unsqueeze, Concat, Reshape),
as the graphs exported by torch compute them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812


class UnsupportedOnnxError(ValueError):
    """The file is not an ONNX graph this interpreter can run; the message names the file and why."""


def _pair_pads(pads: list[int], spatial: int) -> list[int]:
    """ONNX pads (begin..., end...) -> F.pad's order (last dimension first, begin then end)."""
    out = []
    for axis in reversed(range(spatial)):
        out += [pads[axis], pads[axis + spatial]]
    return out


def _conv(x, weight, bias=None, *, strides=None, pads=None, dilations=None, group=1, auto_pad="NOTSET", **_):
    spatial = weight.ndim - 2
    if auto_pad not in ("NOTSET", "VALID"):
        raise UnsupportedOnnxError(f"Conv with auto_pad={auto_pad}")
    pads = pads or [0] * (2 * spatial)
    if pads[:spatial] != pads[spatial:]:
        x, pads = F.pad(x, _pair_pads(pads, spatial)), [0] * (2 * spatial)
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    return conv(x, weight, bias, strides or 1, pads[:spatial], dilations or 1, group)


def _pool(kind: str):
    def pool(x, *, kernel_shape, strides=None, pads=None, ceil_mode=0, count_include_pad=0, **_):
        spatial = len(kernel_shape)
        pads = pads or [0] * (2 * spatial)
        if pads[:spatial] != pads[spatial:]:
            raise UnsupportedOnnxError(f"{kind} with asymmetric padding {pads}")
        strides = strides or [1] * spatial
        if kind == "MaxPool":
            return F.max_pool2d(x, kernel_shape, strides, pads[:spatial], ceil_mode=bool(ceil_mode))
        return F.avg_pool2d(
            x, kernel_shape, strides, pads[:spatial], bool(ceil_mode), bool(count_include_pad)
        )

    return pool


def _batch_norm(x, scale, bias, mean, var, *, epsilon=1e-5, **_):
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, epsilon)


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, **_):  # noqa: N803 (ONNX's names)
    out = alpha * ((a.T if transA else a) @ (b.T if transB else b))
    return out if c is None else out + beta * c


def _flatten(x, *, axis=1, **_):
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _reshape(x, shape, *, allowzero=0, **_):
    sizes = [int(s) for s in shape.tolist()]
    if not allowzero:
        sizes = [x.shape[i] if s == 0 else s for i, s in enumerate(sizes)]
    return x.reshape(sizes)


def _unsqueeze(x, axes=None, **attributes):
    axes = axes.tolist() if axes is not None else attributes["axes"]
    for axis in sorted(a % (x.ndim + len(axes)) for a in axes):
        x = x.unsqueeze(axis)
    return x


def _squeeze(x, axes=None, **attributes):
    axes = axes.tolist() if axes is not None else attributes.get("axes")
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(a % x.ndim for a in axes))


def _gather(x, indices, *, axis=0, **_):
    return x.index_select(axis, indices.reshape(-1).long() % x.shape[axis]).reshape(
        *x.shape[:axis], *indices.shape, *x.shape[axis + 1 :]
    )


def _prelu(x, slope, **_):
    return torch.where(x >= 0, x, x * slope)


OPERATORS: dict[str, Callable] = {
    "Add": lambda a, b, **_: a + b,
    "Sub": lambda a, b, **_: a - b,
    "Mul": lambda a, b, **_: a * b,
    "Div": lambda a, b, **_: a / b,
    "Relu": lambda x, **_: F.relu(x),
    "PRelu": _prelu,
    "LeakyRelu": lambda x, *, alpha=0.01, **_: F.leaky_relu(x, alpha),
    "Sigmoid": lambda x, **_: torch.sigmoid(x),
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "MaxPool": _pool("MaxPool"),
    "AveragePool": _pool("AveragePool"),
    "GlobalAveragePool": lambda x, **_: x.mean(dim=tuple(range(2, x.ndim)), keepdim=True),
    "Gemm": _gemm,
    "MatMul": lambda a, b, **_: a @ b,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda x, *, perm=None, **_: x.permute(*(perm or reversed(range(x.ndim)))),
    "Shape": lambda x, **_: torch.tensor(x.shape, dtype=torch.int64, device=x.device),
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda *xs, axis, **_: torch.cat(xs, axis),
    "Identity": lambda x, **_: x,
    "Dropout": lambda x, *_, **__: x,  # inference: the input, unchanged
}
"""ONNX operator -> torch function(inputs..., **attributes), ONNX semantics (numpy broadcasting)."""


class OnnxGraph(torch.nn.Module):
    """``OnnxGraph(path)(x)``: the graph's first output for its one input ``x`` (e.g. faces [N, 3, 112, 112]
    -> embeddings [N, 512] for ArcFace). Memory: the weights (166 MB for iresnet50 in fp32) plus one
    forward's activations."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        try:
            import onnx
            from onnx import helper, numpy_helper
        except ImportError as error:
            raise UnsupportedOnnxError(
                f"{path}: reading ONNX files needs the `onnx` package: `python -m pip install onnx` into "
                "ComfyUI's Python"
            ) from error
        path = Path(path)
        try:
            model = onnx.load(str(path))
        except Exception as error:  # protobuf raises DecodeError, OSError...; each means "not ONNX"
            raise UnsupportedOnnxError(
                f"{path}: not a readable ONNX file ({type(error).__name__})"
            ) from error
        graph = model.graph
        unknown = sorted({node.op_type for node in graph.node} - OPERATORS.keys() - {"Constant"})
        if unknown or not graph.node:
            raise UnsupportedOnnxError(
                f"{path}: uses ONNX operators this converter does not know: {', '.join(unknown) or 'none'}"
                f" (known: {', '.join(sorted(OPERATORS))}); it is not an ArcFace-style network"
            )
        self._names: dict[str, str] = {}
        for index, tensor in enumerate(graph.initializer):
            key = f"w{index}"
            self.register_buffer(key, torch.from_numpy(np.array(numpy_helper.to_array(tensor))))
            self._names[tensor.name] = key
        constants = {init.name for init in graph.initializer}
        inputs = [value.name for value in graph.input if value.name not in constants]
        if len(inputs) != 1:
            raise UnsupportedOnnxError(f"{path}: expected one input, found {len(inputs)} ({inputs})")
        self.input_name, self.output_name = inputs[0], graph.output[0].name
        shape = graph.input[[v.name for v in graph.input].index(self.input_name)].type.tensor_type.shape
        self.input_shape = tuple(d.dim_value or None for d in shape.dim)  # None: a free dimension
        self.input_consumers = sorted({node.op_type for node in graph.node if self.input_name in node.input})
        self._nodes = []
        for index, node in enumerate(graph.node):
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                value = np.array(numpy_helper.to_array(attributes["value"]))
                self.register_buffer(f"c{index}", torch.from_numpy(value))
                self._names[node.output[0]] = f"c{index}"
                continue
            attributes = {k: v.decode() if isinstance(v, bytes) else v for k, v in attributes.items()}
            self._nodes.append((node.op_type, list(node.input), list(node.output), attributes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {self.input_name: x, "": None}
        for name, key in self._names.items():
            values[name] = getattr(self, key)
        for op, inputs, outputs, attributes in self._nodes:
            values[outputs[0]] = OPERATORS[op](*(values[name] for name in inputs), **attributes)
        return values[self.output_name]
