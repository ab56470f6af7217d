"""dlib's face models through faces/dlib_models.py (real models, real portraits), and the pack without them."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
from comfyui_diffferv.faces.dlib_models import (
    INSTALL_COMMAND,
    SAME_PERSON_DISTANCE,
    face_models,
    missing_reason,
    to_uint8,
)
from comfyui_diffferv.faces.resnet import FaceResNet, ModelFileError
from conftest import ROOT
from flow_clips import ASSET, demo_frames


@pytest.fixture(scope="module")
def models():
    return face_models()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(ASSET)), cv2.COLOR_BGR2RGB))


def test_finds_the_face_and_its_landmarks(models, astronaut):
    faces = models.detect(astronaut)
    assert len(faces) == 1  # the portrait shows one face (a 256 px copy: found on the upsampled pass)
    face = faces[0]
    assert face.score > 0 and 30 < face.width < 90 and 30 < face.height < 90
    five, outline = models.landmarks(astronaut, face, 5), models.landmarks(astronaut, face, 68)
    assert five.shape == (5, 2) and outline.shape == (68, 2) and outline.dtype == np.float32
    margin = face.width / 2
    for points in (five, outline):
        assert (points[:, 0] > face.left - margin).all() and (points[:, 0] < face.right + margin).all()
        assert (points[:, 1] > face.top - margin).all() and (points[:, 1] < face.bottom + margin).all()
    # iBUG layout: the left eye (36-41) is left of the right eye (42-47), both above the mouth (48-67)
    left_eye, right_eye, mouth = outline[36:42].mean(0), outline[42:48].mean(0), outline[48:68].mean(0)
    assert left_eye[0] < right_eye[0] and max(left_eye[1], right_eye[1]) < mouth[1]
    with pytest.raises(ValueError, match="5 or 68"):
        models.landmarks(astronaut, face, 17)


def test_a_frame_without_a_face_has_none(models):
    assert models.detect(np.full((120, 160, 3), 128, np.uint8)) == []
    assert models.main_face(np.full((120, 160, 3), 128, np.uint8)) is None


def test_embeddings_tell_the_same_person_from_another(models, astronaut):
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    woman = to_uint8(demo_frames(1, 350))[0]
    images = [astronaut, mirrored, woman]
    embeddings = models.embeddings(images, [models.main_face(image) for image in images])
    assert embeddings.shape == (3, 128) and embeddings.dtype == np.float32
    same = np.linalg.norm(embeddings[0] - embeddings[1])
    other = min(np.linalg.norm(embeddings[2] - embeddings[i]) for i in (0, 1))
    assert same < SAME_PERSON_DISTANCE < other
    assert models.embeddings([], []).shape == (0, 128)


def test_the_torch_resnet_gives_dlibs_own_descriptors(models, astronaut):
    """faces/resnet.py against dlib's face_recognition_model_v1 (the same file, run by dlib), on real
    faces: the demo clip's and the astronaut's, and on random chips."""
    import dlib
    import face_recognition_models

    reference = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
    images = [*to_uint8(demo_frames(3, 350)), astronaut]
    chips = models.chips(images, [models.main_face(image) for image in images])
    chips = np.concatenate([chips, np.random.default_rng(0).integers(0, 256, (2, 150, 150, 3), np.uint8)])
    ours = models.embeddings(images, [models.main_face(image) for image in images])
    expected = np.array([np.array(d) for d in reference.compute_face_descriptor(list(chips))])
    assert np.abs(ours - expected[:4]).max() < 1e-5
    assert (
        np.abs(
            FaceResNet(face_recognition_models.face_recognition_model_location())(chips).numpy() - expected
        ).max()
        < 1e-5
    )


def test_a_file_that_is_not_the_resnet_is_refused():
    import face_recognition_models

    with pytest.raises(ModelFileError, match="expected dlib's face-recognition ResNet"):
        FaceResNet(face_recognition_models.pose_predictor_five_point_model_location())


def test_main_face_embeddings_per_frame_and_cached(models):
    frames = to_uint8(demo_frames(3, 256))
    frames[1] = 128  # a grey frame: no face
    calls = []
    embeddings, found = models.main_face_embeddings(frames, calls.append)
    assert calls == [1, 2, 3] and found.tolist() == [True, False, True]
    assert np.isnan(embeddings[1]).all() and np.isfinite(embeddings[[0, 2]]).all()
    alone = models.embeddings([frames[2]], [models.main_face(frames[2])])[0]
    assert np.allclose(embeddings[2], alone, atol=1e-5)  # one batch of 2 faces vs a batch of 1
    calls.clear()
    again, found_again = models.main_face_embeddings(frames.copy(), calls.append)  # same pixels: cached
    assert calls == [3] and np.array_equal(again, embeddings, equal_nan=True) and (found_again == found).all()


def test_without_dlib_the_pack_imports_and_says_how_to_install_it():
    """A Python where `import dlib` fails (as where it is not installed): the face and metric modules
    import, face_models() raises with the install command, and a report without identity still works."""
    script = f"""
import sys
sys.modules["dlib"] = None  # what Python does for a module that cannot be imported: ImportError
sys.path.insert(0, {str(ROOT / "tests")!r})
import conftest, torch
from comfyui_diffferv.faces.dlib_models import FaceModelsMissingError, face_models, missing_reason
from comfyui_diffferv.metrics.report import measure_edit
try:
    face_models()
except FaceModelsMissingError as missing:
    print("MISSING:", missing)
print("REASON:", missing_reason())
frames = torch.rand(2, 32, 32, 3)
print("PSNR:", measure_edit(frames, frames).clip()["psnr_db"])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert INSTALL_COMMAND in lines["MISSING"] and "dlib-bin" in lines["MISSING"]
    assert lines["REASON"] == lines["MISSING"] and lines["PSNR"] == "100.0"
    assert missing_reason() is None  # here, where the test environment has them
