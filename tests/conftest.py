"""Shared test set-up.

The pack is imported under the fixed name `comfyui_diffferv` the way its command line does it
(__main__.py: the package and its nodes/ folder are registered without running their __init__, which
need ComfyUI's node API), so tests can write `from comfyui_diffferv.flow import ...` whatever the
checkout's folder is called. ComfyUI itself imports the pack under a name derived from its folder path.
"""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _import_pack() -> None:
    spec = importlib.util.spec_from_file_location("comfyui_diffferv_main", ROOT / "__main__.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    main.import_pack()


_import_pack()


# --------------------------------------------------------------------------------------------------
# Fixtures: a real ComfyUI in this process, random-weight SD1.5-shaped models, the demo clip.
# (Imported lazily: tests of the pure packages never start ComfyUI.)

import os  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import pytest  # noqa: E402

# Fixtures of the specialization tests (a tiny SD1.5 checkpoint, portraits, short training runs), shared
# by several test modules: registered once here so each session-scoped one is built once.
pytest_plugins = ["specialize_fixtures"]

DEMO_CLIP = ROOT / "workflows" / "media" / "talking_face.mp4"
CACHE = Path(os.environ.get("DIFFFERV_TEST_CACHE", ROOT / ".cache"))


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """ComfyUI (in-process) with the built-in nodes and this pack loaded; see tests/comfy_harness.py."""
    from comfy_harness import InProcessComfy

    return InProcessComfy(tmp_path_factory.mktemp("comfyui"))


@dataclass(frozen=True)
class TinySD15:
    """Random-weight SD1.5-shaped MODEL (ModelPatcher), CLIP and VAE built with ComfyUI's classes."""

    model: object
    clip: object
    vae: object


@pytest.fixture(scope="session")
def tiny_sd15(comfy) -> TinySD15:
    from comfy_harness import build_clip, build_unet, build_vae

    return TinySD15(build_unet(seed=0), build_clip(seed=1), build_vae(seed=2))


@pytest.fixture(scope="session")
def demo_clip() -> Path:
    """The committed demo clip: 48 frames, 350x350, 25 fps, h264."""
    return DEMO_CLIP


@pytest.fixture(scope="session")
def sd15_checkpoint(comfy) -> Path:
    """A full-size random-weight SD1.5 checkpoint (real key layout), cached under .cache/ between runs."""
    from comfy_harness import write_random_sd15_checkpoint

    return write_random_sd15_checkpoint(CACHE / "checkpoints" / "random_sd15.safetensors")


@pytest.fixture
def without_dlib(monkeypatch):
    """This Python as where dlib is not installed: `import dlib` raises ImportError until the test ends
    (sys.modules["dlib"] = None), and the face models are loaded afresh before and after, in every copy of
    the pack (ComfyUI imports it under its own module name)."""
    import sys

    def forget_face_models() -> None:
        for name, module in list(sys.modules.items()):
            if name.endswith(".faces.dlib_models"):
                module.face_models.cache_clear()

    forget_face_models()
    monkeypatch.setitem(sys.modules, "dlib", None)
    yield
    forget_face_models()


@pytest.fixture(scope="session")
def input_clip(comfy, demo_clip) -> str:
    """The demo clip copied into the in-process ComfyUI's input folder; returns its file name there."""
    import shutil

    shutil.copy(demo_clip, comfy.workdir / "input" / demo_clip.name)
    return demo_clip.name
