"""Flow backends: OpenCV DIS and Farneback on known motion; the TorchScript slot's calling convention."""

import warnings

import pytest
import torch
from comfyui_diffferv.flow.backends import BACKENDS, DISFlow, FarnebackFlow, TorchScriptFlow, make_backend
from flow_clips import shifted_clip


@pytest.mark.parametrize(
    ("backend", "tolerance"), [(DISFlow(), 0.25), (FarnebackFlow(), 0.75)], ids=["dis", "farneback"]
)
def test_opencv_backends_recover_a_known_shift(backend, tolerance):
    clip = shifted_clip(3, (128, 192), (5, -3), (60, 60))  # content moves 5 px right, 3 px up a frame
    flow = backend.compute(clip[:2], clip[1:])
    assert flow.shape == (2, 128, 192, 2) and flow.dtype == torch.float32
    interior = flow[:, 16:-16, 16:-16].reshape(-1, 2)
    median = interior.median(dim=0).values
    assert torch.allclose(median, torch.tensor([5.0, -3.0]), atol=tolerance), median
    backward = backend.compute(clip[1:2], clip[:1])[0, 16:-16, 16:-16].reshape(-1, 2).median(dim=0).values
    assert torch.allclose(backward, torch.tensor([-5.0, 3.0]), atol=tolerance), backward


class ProbeFlow(torch.nn.Module):
    """Returns what it was given, RAFT-style: a list of predictions, the last one dx = image1's red
    channel, dy = image2's green channel, so the test can read back the input normalisation."""

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> list[torch.Tensor]:
        flow = torch.stack([image1[:, 0], image2[:, 1]], dim=1)
        return [torch.zeros_like(flow), flow]


def save_scripted(module: torch.nn.Module, path) -> None:
    with warnings.catch_warnings():  # torch >= 2.10 marks torch.jit.script deprecated; it still works
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(module).save(str(path))


def test_torchscript_backend_follows_its_calling_convention(tmp_path):
    path = tmp_path / "probe.pt"
    save_scripted(ProbeFlow(), path)
    backend = make_backend("torchscript", path)
    a, b = torch.rand(2, 64, 128, 3), torch.rand(2, 64, 128, 3)
    flow = backend.compute(a, b)
    assert flow.shape == (2, 64, 128, 2)
    torch.testing.assert_close(flow[..., 0], 2 * a[..., 0] - 1)
    torch.testing.assert_close(flow[..., 1], 2 * b[..., 1] - 1)


class WrongShape(torch.nn.Module):
    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        return image1[:, :2, ::2, ::2]


def test_torchscript_backend_refuses_missing_files_and_wrong_outputs(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere\.pt' does not exist.*'dis' backend"):
        TorchScriptFlow(tmp_path / "nothere.pt")
    with pytest.raises(ValueError, match="needs a flow model file"):
        make_backend("torchscript")
    path = tmp_path / "wrong.pt"
    save_scripted(WrongShape(), path)
    with pytest.raises(ValueError, match=r"returned shape \(1, 2, 32, 32\), expected \[1, 2, 64, 64\]"):
        TorchScriptFlow(path).compute(torch.rand(1, 64, 64, 3), torch.rand(1, 64, 64, 3))


def test_make_backend_names():
    assert [make_backend(name).name for name in BACKENDS[:2]] == ["dis", "farneback"]
    with pytest.raises(
        ValueError, match="unknown flow backend 'raft': choose one of dis, farneback, torchscript"
    ):
        make_backend("raft")
