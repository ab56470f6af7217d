"""Identity networks as training losses (faces/onnx_graph.py, faces/identity.py, faces/resnet.py): a random
iresnet exported to ONNX runs in torch as in onnxruntime with correct gradients; dlib's ResNet gives today's
descriptors with a gradient; the differentiable alignment cuts dlib's own chips."""

import cv2
import numpy as np
import pytest
import torch
from comfyui_diffferv.faces.dlib_models import face_models
from comfyui_diffferv.faces.identity import (
    ArcFaceIdentity,
    DlibIdentity,
    arcface_targets,
    dlib_targets,
    fit_similarity,
)
from comfyui_diffferv.faces.onnx_graph import OnnxGraph, UnsupportedOnnxError
from flow_clips import ASSET
from onnx_fixtures import TinyIResNet, export


@pytest.fixture(scope="module")
def iresnet_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "tiny_iresnet.onnx"
    export(TinyIResNet(), path)
    return path


def test_converted_iresnet_matches_onnxruntime_and_has_correct_gradients(iresnet_file):
    onnxruntime = pytest.importorskip("onnxruntime")
    graph = OnnxGraph(iresnet_file)
    import onnx

    ops = {node.op_type for node in onnx.load(str(iresnet_file)).graph.node}
    assert {"Conv", "BatchNormalization", "PRelu", "Add", "Flatten", "Gemm"} <= ops  # ArcFace's operators
    assert graph.input_shape == (None, 3, 112, 112)
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    session = onnxruntime.InferenceSession(str(iresnet_file), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"data": x.numpy()})[0]
    with torch.no_grad():
        ours = graph(x)
    assert ours.shape == (3, 32)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4, atol=1e-5)

    double = graph.double()
    small = (torch.rand(1, 3, 112, 112, dtype=torch.float64) * 2 - 1).requires_grad_()
    # fast mode: the analytical gradient against central finite differences along random directions
    assert torch.autograd.gradcheck(double, (small,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_arcface_identity_normalises_as_the_graph_wants(iresnet_file, tmp_path):
    """A graph that begins with its own Sub/Mul gets raw pixels, the others the [-1, 1] image: the same
    weights give the same embeddings either way."""
    torch.manual_seed(0)
    plain = TinyIResNet()
    own = TinyIResNet(own_normalisation=True)
    own.load_state_dict(plain.state_dict())
    export(plain, tmp_path / "plain.onnx")
    export(own, tmp_path / "own.onnx")
    a, b = ArcFaceIdentity(tmp_path / "plain.onnx"), ArcFaceIdentity(tmp_path / "own.onnx")
    assert (a.raw_pixels, b.raw_pixels) == (False, True)
    chips = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(a.embed(chips), b.embed(chips), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a.embed(chips), plain.eval()(chips), rtol=1e-4, atol=1e-5)


def test_unknown_operators_and_wrong_inputs_are_refused_by_name(tmp_path):
    class Softplus(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.softplus(x).mean((2, 3))

    export(Softplus(), tmp_path / "softplus.onnx")
    with pytest.raises(UnsupportedOnnxError, match=r"softplus\.onnx: uses ONNX operators .* Softplus"):
        OnnxGraph(tmp_path / "softplus.onnx")
    export(TinyIResNet().stem, tmp_path / "detector.onnx", size=64)  # another input size: not a recogniser
    with pytest.raises(
        UnsupportedOnnxError, match=r"detector\.onnx: takes input .* not an ArcFace recognition"
    ):
        ArcFaceIdentity(tmp_path / "detector.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"\x00not protobuf at all" * 10)
    with pytest.raises(UnsupportedOnnxError, match=r"broken\.onnx: not a readable ONNX file"):
        OnnxGraph(tmp_path / "broken.onnx")


@pytest.fixture(scope="module")
def portrait():
    models = face_models()
    image = np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(ASSET)), cv2.COLOR_BGR2RGB))
    face = models.main_face(image)
    return models, image, face, models.landmarks(image, face, 5)


def test_gradient_enabled_dlib_network_gives_todays_descriptors(portrait):
    models, image, face, _ = portrait
    chips = models.chips([image, image[:, ::-1].copy()], [face, models.main_face(image[:, ::-1].copy())])
    today = models.resnet(chips)  # under inference_mode, as the Edit Report runs it
    pixels = torch.from_numpy(chips).float().permute(0, 3, 1, 2).requires_grad_()
    with_gradient = models.resnet.descriptors(pixels)
    torch.testing.assert_close(with_gradient, today, rtol=1e-5, atol=1e-6)
    with_gradient[0].square().sum().backward()
    assert pixels.grad is not None and torch.isfinite(pixels.grad).all() and pixels.grad[0].abs().sum() > 0
    assert pixels.grad[1].abs().sum() == 0  # the second face does not enter the first one's descriptor


def test_differentiable_alignment_cuts_dlibs_chips(portrait):
    """dlib's template on 150 px chips, fitted from the 5 landmarks and warped with kornia, gives dlib's own
    chip (get_face_chip) up to interpolation, and the same identity."""
    models, image, face, landmarks = portrait
    identity = DlibIdentity(models.resnet)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    chip = identity.align(tensor, torch.from_numpy(landmarks)[None])
    ours = ((chip[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255)
    theirs = torch.from_numpy(models.chips([image], [face])[0]).float()
    assert (ours - theirs).abs().mean() < 6.0, (ours - theirs).abs().mean()  # of 255; interpolation only
    distance = torch.linalg.vector_norm(models.resnet(ours[None].round()) - models.resnet(theirs[None]))
    assert distance < 0.1, distance  # same person is ~0.35, others ~0.8

    shift = torch.tensor([[0.6, -0.8, 5.0], [0.8, 0.6, -3.0]], dtype=torch.float64)  # scale 1, 53 degrees
    points = torch.rand(2, 5, 2, dtype=torch.float64) * 100
    moved = points @ shift[:, :2].T + shift[:, 2]
    torch.testing.assert_close(fit_similarity(points, moved[0])[0], shift)
    targets = arcface_targets()  # dlib's mean face on ArcFace's 112 px eyes: eyes, then the nose below them
    assert (targets[:, 0] > 30).all() and (targets[:, 0] < 82).all() and 70 < targets[4, 1] < 90
    assert dlib_targets().shape == (5, 2)
