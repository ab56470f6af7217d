"""What a ComfyUI server has, and what an edit needs of it, checked before anything is sent to it.

`server_facts` asks the server (system_stats, object_info, the pack's /diffferv/info) once: the pack's
version there, its node classes, the checkpoints and UNets it can load, whether the face models load,
its free RAM and GPU, and how large an upload it takes (its `--max-upload-size`, read off the command
line system_stats reports; ComfyUI's default is 100 MB). `lacks` compares them with an edit's `Needs`
and says, one phrase each, what the server lacks; `upload_problem` is the sentence for a clip over the
server's upload limit.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

from ..comfyhost.host import PACK_NAME, pack_version
from ..remote.answers import Origin, field, items, obj
from ..remote.errors import ServerRefusedError
from .cli import InputRefusedError
from .gpu_fit import Gpu
from .workflow import CHECKPOINT_LOADER, UNET_LOADER

DEFAULT_UPLOAD_MB = 100.0
"""ComfyUI's --max-upload-size default, in MB (2**20 bytes)."""


@dataclass(frozen=True)
class ServerFacts:
    """One server, as it described itself."""

    name: str  # its display URL
    pack_version: str | None  # None: the pack is not installed there
    face_models_missing: str | None  # why dlib's face models do not load there (None: they do)
    node_classes: frozenset[str]
    checkpoints: frozenset[str]
    unets: frozenset[str]
    ram_free: int
    gpu: Gpu | None  # a CUDA device (None: the server runs on its CPU or another kind of device)
    upload_limit: int  # bytes


@dataclass(frozen=True)
class Needs:
    """What one edit needs of a server: its workflow's node classes, the checkpoint and UNet it loads (by
    file name), the face models (--mask, --report) and the size of the clip to upload."""

    node_classes: frozenset[str]
    checkpoint: str
    unet: str | None
    face_models: bool
    upload_bytes: int


def combo_options(object_info: dict, node_class: str, name: str, where: Origin) -> frozenset[str]:
    """The options of a node's combo input in /object_info, in either form ComfyUI writes it:
    `[[options...], {...}]` (V1 nodes) or `["COMBO", {"options": [...]}]` (V3 nodes); none when the server
    has no such node. A node entry of another shape is a ServerAnswerError."""
    if node_class not in object_info:
        return frozenset()
    inputs = field(obj(object_info[node_class], where), "input", dict, where, {})
    spec = {
        **field(inputs, "optional", dict, where, {}),
        **field(inputs, "required", dict, where, {}),
    }.get(name)
    if not spec:
        return frozenset()
    spec = items(spec, object, where, f"{node_class}'s {name}")
    options = (
        spec[0]
        if isinstance(spec[0], list)
        else (obj(spec[1], where).get("options", []) if len(spec) > 1 else [])
    )
    return frozenset(items(options, str, where, f"{node_class}'s {name} options"))


def upload_limit(argv: list[str]) -> int:
    """The server's upload limit in bytes, from its command line (`--max-upload-size MB`, default 100)."""
    megabytes = DEFAULT_UPLOAD_MB
    for index, word in enumerate(argv):
        value = None
        if word == "--max-upload-size" and index + 1 < len(argv):
            value = argv[index + 1]
        elif word.startswith("--max-upload-size="):
            value = word.split("=", 1)[1]
        if value is not None:
            with contextlib.suppress(ValueError):
                given = float(value)
                megabytes = given if math.isfinite(given) and given > 0 else megabytes
    return round(megabytes * 2**20)


async def server_facts(api) -> ServerFacts:
    """Ask the server (a `server_api.ServerApi`) what it has; raises its ServerLostError/ServerRefusedError,
    and ServerAnswerError (naming the route and what was wrong) for an answer of another shape."""
    stats = await api.system_stats()
    info = await api.pack_info()
    object_info = await api.object_info()
    where = Origin(api.name, "GET /system_stats")
    system = field(stats, "system", dict, where, {})
    devices = items(field(stats, "devices", list, where, []), dict, where, "devices")
    cuda = [device for device in devices if device.get("type") == "cuda"]
    gpu = None
    if cuda:
        gpu = Gpu(
            field(cuda[0], "name", str, where, "cuda")[:80],
            round(field(cuda[0], "vram_free", float, where, 0.0)),
        )
    pack = Origin(api.name, "GET /diffferv/info")
    return ServerFacts(
        name=api.name,
        pack_version=field(info, "version", str, pack)[:40] if info is not None else None,
        face_models_missing=face_models_missing(info, pack),
        node_classes=frozenset(object_info),
        checkpoints=combo_options(
            object_info, CHECKPOINT_LOADER, "ckpt_name", Origin(api.name, "GET /object_info")
        ),
        unets=combo_options(object_info, UNET_LOADER, "unet_name", Origin(api.name, "GET /object_info")),
        ram_free=round(field(system, "ram_free", float, where, 0.0)),
        gpu=gpu,
        upload_limit=upload_limit(items(field(system, "argv", list, where, []), str, where, "argv")),
    )


def face_models_missing(info: dict | None, where: Origin) -> str | None:
    """Why the face models do not load on the server, from its /diffferv/info (None: they do, or the
    pack is not there); the reason itself stays in that server's log."""
    if info is None or field(info, "face_models", bool, where):
        return None
    return "they do not load there (its log says why)"


def lacks(facts: ServerFacts, needs: Needs) -> list[str]:
    """What the server lacks for the edit, a phrase each (empty when it has everything)."""
    if facts.pack_version is None:
        return [f"the pack {PACK_NAME} (install it there: ComfyUI-Manager, or clone it into custom_nodes/)"]
    said = []
    here = pack_version()
    if facts.pack_version != here:
        said.append(
            f"the pack's version {here} (it runs {facts.pack_version}; update the pack there or here)"
        )
    missing_nodes = sorted(needs.node_classes - facts.node_classes)
    if missing_nodes:
        said.append(f"the nodes {', '.join(missing_nodes)} (install the packs that provide them)")
    if needs.checkpoint not in facts.checkpoints:
        said.append(f"the checkpoint {needs.checkpoint} (put it in its models/checkpoints/)")
    if needs.unet is not None and needs.unet not in facts.unets:
        said.append(f"the UNet {needs.unet} (put it in its models/diffusion_models/)")
    if needs.face_models and facts.face_models_missing:
        said.append(f"the face models for --mask and --report ({facts.face_models_missing})")
    return said


def upload_problem(facts: ServerFacts, flag: str, video: str, size: int) -> str | None:
    """The sentence for a clip larger than the server takes (None when it fits)."""
    if size <= facts.upload_limit:
        return None
    return upload_refused(facts.name, flag, video, size, facts.upload_limit)


def upload_refused(server: str, flag: str, video: str, size: int, limit: int | None) -> str:
    """A clip over a server's upload limit, in one sentence with the server's flag to raise it."""
    over = (
        f"takes uploads up to {megabytes(limit)}"
        if limit is not None
        else "refused it as too large (HTTP 413)"
    )
    needed = -(-size // 2**20) + 1
    return (
        f"{flag}: {video} is {megabytes(size)} and the server {server} {over}; start that server with "
        f"--max-upload-size {needed} (MB) or more"
    )


def megabytes(nbytes: int) -> str:
    """A size in the MB (2**20 bytes) of ComfyUI's --max-upload-size."""
    value = nbytes / 2**20
    return f"{value:.2f} MB" if value < 10 else f"{value:.0f} MB"


async def upload_clip(api, video: Path, flag: str) -> str:
    """Upload the clip into the server's input folder; returns the name it has there. A refusal for its
    size (HTTP 413: over the server's --max-upload-size) is the one sentence of `upload_refused`."""

    try:
        return await api.upload(video, video.name)
    except ServerRefusedError as error:
        if error.status != 413:
            raise
        raise InputRefusedError(
            upload_refused(api.name, flag, str(video), video.stat().st_size, None)
        ) from None
