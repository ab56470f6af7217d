"""Every bad input ends in one clear sentence before the long work starts: the shipped face-edit workflow
(API form) through ComfyUI's own validator and executor, each node input limit and each bad file or
prompt refused with a sentence that names the input, what was found and what to do.
(The `edit` command's refusals are in test_edit_command_inputs.py.)"""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import safetensors.torch
import torch
from comfy_harness import PromptError, build_unet
from comfyui_diffferv.faces.dlib_models import INSTALL_COMMAND
from comfyui_diffferv.headless.workflow import WORKFLOW, prepare_prompt
from comfyui_diffferv.video.decode import fit_frames
from comfyui_diffferv.video.encode import FORMATS, write_video
from conftest import ROOT

SOURCE, EDIT = "a photo of a woman", "a photo of an old woman"
TINY = {"frames": 3, "size": 64, "steps": 2}
OUR_NODES = (
    "DiffFERV_LoadVideo",
    "DiffFERV_ComputeFlowTrajectories",
    "DiffFERV_ApplyTemporalAttention",
    "DiffFERV_DDIMInvertWithCache",
    "DiffFERV_PreservationInjectSampler",
    "DiffFERV_VideoCombine",
)
"""The pack's nodes in the shipped face-edit workflow (Load Specialized UNet is tested on its own)."""
ONE_FACE = ROOT / "workflows" / "api" / "diffferv_edit_one_face.json"
WORKFLOW_OF = {"DiffFERV_FaceMask": "one_face"}
"""The workflow fixture holding a node type, where it is not the face-edit workflow."""


@pytest.fixture(scope="module")
def face_edit_inputs(comfy, input_clip, sd15_checkpoint) -> dict:
    """prepare_prompt's arguments for the shipped face-edit workflow at a tiny size."""
    comfy.add_model_folder("checkpoints", sd15_checkpoint.parent)
    return {
        "video": input_clip,
        "checkpoint": sd15_checkpoint.name,
        "source": SOURCE,
        "edit": EDIT,
        **TINY,
    }


@pytest.fixture(scope="module")
def face_edit(comfy, face_edit_inputs) -> dict:
    """The shipped face-edit workflow at a tiny size, valid as it is."""
    prompt = prepare_prompt(json.loads(WORKFLOW.read_text()), **face_edit_inputs)
    assert comfy.validate(prompt)[0] == []
    return prompt


@pytest.fixture(scope="module")
def one_face(comfy, face_edit_inputs) -> dict:
    """The shipped edit-one-face workflow (Face Mask on the sampler's mask) at a tiny size, valid."""
    prompt = prepare_prompt(json.loads(ONE_FACE.read_text()), **face_edit_inputs)
    assert comfy.validate(prompt)[0] == []
    return prompt


def changed(prompt: dict, class_type: str, **inputs) -> dict:
    """A copy of the workflow with inputs of its first node of `class_type` changed."""
    prompt = copy.deepcopy(prompt)
    node = next(node for _, node in sorted(prompt.items()) if node["class_type"] == class_type)
    node["inputs"].update(inputs)
    return prompt


def refusal(comfy, prompt: dict, class_type: str, name: str) -> str:
    """The one sentence ComfyUI's validator gives for input `name` of the node of `class_type` (the test
    fails if the workflow validates, or if the sentence does not name the input)."""
    problems, _ = comfy.validate(prompt)
    said = [p.message for p in problems if p.class_type == class_type]
    assert said, f"{class_type}.{name} was accepted: {problems}"
    assert len(said) == 1 and name in said[0], said
    return said[0]


def limits(comfy, class_type: str) -> list[tuple[str, str, str, float]]:
    """(input, type, "min"/"max", bound) of every numeric limit the node declares."""
    declared = comfy.node_class(class_type).INPUT_TYPES()
    found = []
    for name, spec in {**declared.get("required", {}), **declared.get("optional", {})}.items():
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        found += [(name, spec[0], bound, options[bound]) for bound in ("min", "max") if bound in options]
    return found


@pytest.mark.parametrize("class_type", (*OUR_NODES, "DiffFERV_FaceMask"))
def test_every_input_limit_is_enforced_by_the_validator(comfy, request, class_type):
    """One step past each declared min/max (optional inputs included, e.g. the sampler's mask_feather_px)
    is refused by ComfyUI's validator, naming the input and the value (a node's validate_inputs must not
    switch those checks off, as a **kwargs signature does); the bound itself is accepted."""
    face_edit = request.getfixturevalue(WORKFLOW_OF.get(class_type, "face_edit"))
    declared = limits(comfy, class_type)
    assert declared
    for name, kind, bound, value in declared:
        step = 1 if kind == "INT" else 0.5
        outside = value - step if bound == "min" else value + step
        message = refusal(comfy, changed(face_edit, class_type, **{name: outside}), class_type, name)
        assert str(outside) in message, message
        accepted = value if name != "window" or value % 2 else value - 1  # the window must be odd too
        assert comfy.validate(changed(face_edit, class_type, **{name: accepted}))[0] == [], (name, bound)


@pytest.mark.parametrize(
    "class_type, name, value",
    [
        ("DiffFERV_LoadVideo", "fit", "zoom"),
        ("DiffFERV_ComputeFlowTrajectories", "backend", "raft"),
        ("DiffFERV_DDIMInvertWithCache", "cache_mode", "fast"),
        ("DiffFERV_VideoCombine", "format", "avi"),
        ("DiffFERV_FaceMask", "region", "hull"),
        ("DiffFERV_FaceMask", "pick", "biggest"),
    ],
)
def test_a_choice_that_is_not_offered_is_refused(comfy, request, class_type, name, value):
    face_edit = request.getfixturevalue(WORKFLOW_OF.get(class_type, "face_edit"))
    message = refusal(comfy, changed(face_edit, class_type, **{name: value}), class_type, name)
    assert value in message


def test_a_size_that_is_no_multiple_of_64_is_refused_not_rounded(comfy, face_edit):
    node = "DiffFERV_LoadVideo"
    message = refusal(comfy, changed(face_edit, node, short_side=100), node, "short_side")
    assert message == (
        "short_side is 100, not a multiple of 64 (the UNet halves the latent three times): use 64 or 128"
    )
    with pytest.raises(ValueError, match="short_side 100 is not a positive multiple of 64"):
        fit_frames(torch.rand(1, 90, 160, 3), 100, 64, "crop")


def test_an_even_window_is_refused_at_validation(comfy, face_edit):
    node = "DiffFERV_ApplyTemporalAttention"
    message = refusal(comfy, changed(face_edit, node, window=4), node, "window")
    assert message == "window is 4: the SWCFA window must be an odd number >= 1 (the paper uses 3)"


@pytest.mark.parametrize("content", [b"this is a text file, renamed", b""], ids=["text", "empty"])
def test_a_file_that_is_no_video_is_refused_at_validation(comfy, face_edit, content):
    name = f"not_a_video_{len(content)}.mp4"
    (comfy.workdir / "input" / name).write_bytes(content)
    message = refusal(comfy, changed(face_edit, "DiffFERV_LoadVideo", video=name), "DiffFERV_LoadVideo", name)
    if content:
        assert message.startswith(
            f"video: {name} is not a readable video ({len(content)} bytes; Invalid data"
        )
        assert message.endswith("check that it plays, or convert it to mp4 (h264)")
    else:
        assert message == f"video: {name}: the file is empty (0 bytes): export or copy it again"


def test_prompts_are_checked_with_the_sd15_tokenizer_at_validation(comfy, face_edit):
    """A prompt over one CLIP chunk is refused before the inversion runs (it used to fail only after it),
    with its token count; 75 tokens are fine; the edit prompt must not be empty, the negative may be."""
    inversion, sampler = "DiffFERV_DDIMInvertWithCache", "DiffFERV_PreservationInjectSampler"
    message = refusal(
        comfy, changed(face_edit, inversion, source_prompt="woman " * 80), inversion, "source_prompt"
    )
    assert (
        message.startswith("source_prompt is 80 tokens long;")
        and "shorten it by at least 5 tokens" in message
    )
    assert comfy.validate(changed(face_edit, inversion, source_prompt="woman " * 75))[0] == []
    message = refusal(comfy, changed(face_edit, sampler, edit_prompt="  "), sampler, "edit_prompt")
    assert message.startswith("edit_prompt is empty: DiffFERV needs a source prompt")
    message = refusal(
        comfy, changed(face_edit, sampler, negative_prompt="old " * 90), sampler, "negative_prompt"
    )
    assert message.startswith("negative_prompt is 90 tokens long;")
    assert comfy.validate(changed(face_edit, sampler, negative_prompt=""))[0] == []


def test_a_refused_workflow_runs_nothing(comfy, face_edit):
    """ComfyUI runs the outputs that did validate; the headless runner runs none (the `edit` command
    used to run the trajectory preview and then fail on the missing edit output)."""
    before = set((comfy.workdir / "temp").rglob("*"))
    with pytest.raises(PromptError) as caught:
        comfy.run_prompt(changed(face_edit, "DiffFERV_PreservationInjectSampler", tau_app=1.5))
    assert caught.value.stage == "validation"
    assert [p.input_name for p in caught.value.problems] == ["tau_app"]
    assert set((comfy.workdir / "temp").rglob("*")) == before


class Touch:
    """A pickle payload with a visible side effect: unpickling it creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_unet_files_are_judged_by_their_header_at_validation(comfy, face_edit_inputs, tmp_path):
    """Load Specialized UNet refuses a pickle (never opened), a cut-short file and another model family
    before anything runs."""
    folder = comfy.workdir / "models" / "diffusion_models"
    marker = tmp_path / "unpickled"
    (folder / "face.ckpt").write_bytes(pickle.dumps(Touch(marker)))
    weights = {k: v.half() for k, v in build_unet(seed=3).model.diffusion_model.state_dict().items()}
    whole = tmp_path / "face.safetensors"
    safetensors.torch.save_file(weights, str(whole))
    data = whole.read_bytes()
    (folder / "cut.safetensors").write_bytes(data[: len(data) // 3])
    flux = {"double_blocks.0.img_attn.qkv.weight": torch.zeros(6, 2), "img_in.weight": torch.zeros(2, 4)}
    safetensors.torch.save_file(flux, str(folder / "flux.safetensors"))
    expected = {
        "face.ckpt": "face.ckpt: only .safetensors files are loaded; .ckpt files are Python pickles",
        "cut.safetensors": f"the file is incomplete ({len(data) // 3} of {len(data)} bytes): download it again",
        "flux.safetensors": "flux.safetensors: not an SD1.5 UNet. Found a Flux diffusion transformer",
    }
    for name, words in expected.items():
        prompt = prepare_prompt(json.loads(WORKFLOW.read_text()), **face_edit_inputs, unet=name)
        message = refusal(comfy, prompt, "DiffFERV_LoadSpecializedUNet", "unet_name")
        assert message.startswith("unet_name: ") and words in message, message
    assert not marker.exists()


@pytest.mark.slow
def test_a_one_frame_clip_fails_before_the_inversion_runs(comfy, face_edit):
    """Through the executor: Load Video gives one frame; the first node that needs two (the flow or the
    inversion, in the executor's order) refuses it, before any UNet call."""
    one = comfy.workdir / "input" / "one_frame.mp4"
    write_video(one, torch.rand(1, 64, 64, 3), 25.0, FORMATS["mp4 (h264)"], 60)
    with pytest.raises(PromptError) as caught:
        comfy.run_prompt(changed(face_edit, "DiffFERV_LoadVideo", video=one.name))
    assert caught.value.stage == "execution"
    (problem,) = caught.value.problems
    assert (problem.class_type, problem.message) in {
        ("DiffFERV_ComputeFlowTrajectories", "frames: got 1 frame(s); trajectories need a video of at least 2 frames"),
        ("DiffFERV_DDIMInvertWithCache", "latent: holds 1 frame; a video edit needs at least 2 (encode the clip's frames)"),
    }  # fmt: skip


def test_face_mask_without_dlib_is_refused_at_validation_with_the_install_command(comfy, without_dlib):
    """ComfyUI in a Python where `import dlib` fails (as where it is not installed): a workflow with Face
    Mask is refused before any node runs, and the sentence says how to install the models."""
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 0}},
        "2": {
            "class_type": "DiffFERV_FaceMask",
            "inputs": {
                "frames": ["1", 0],
                "region": "face",
                "grow_px": 8,
                "pick": "largest",
                "face_index": 0,
            },
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}},
    }
    problems, _ = comfy.validate(prompt)
    ((class_type, message),) = [(p.class_type, p.message) for p in problems]
    assert class_type == "DiffFERV_FaceMask"
    assert message.startswith(
        "Face Mask (DiffFERV) needs dlib's face models: dlib's face models are not installed"
    )
    assert INSTALL_COMMAND in message
