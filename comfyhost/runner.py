"""ComfyUI run in this process without its web server: the engine of the pack's `edit` command (and of
the tests, which run every workflow through it).

`HeadlessComfy` does what ComfyUI's main.py does before serving (puts the ComfyUI folder on sys.path,
picks the device, points the input/output/temp folders at a working folder, loads the built-in extra
nodes and this pack through ComfyUI's own `load_custom_node`), then validates and executes API-form
workflows with ComfyUI's own validator and PromptExecutor. Nothing is imitated. Importing this module
does not import ComfyUI; constructing a HeadlessComfy does, once per process.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import importlib
import shutil
import sys
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .executor import NodeHook, NodeProblem, ProgressHook, PromptError, failure, validation_problems
from .host import PACK_ROOT, find_comfyui
from .versions import EXECUTOR_CACHE_OFF, hidden_inputs

T = TypeVar("T")


@dataclass
class MessageLog:
    """The `server` PromptExecutor reports to (client id, last node, messages): here, a list."""

    client_id: str | None = None
    last_node_id: str | None = None
    messages: list[tuple[str, dict]] = field(default_factory=list)
    on_node: NodeHook | None = None

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))
        if event == "executing" and self.on_node is not None and data.get("node") is not None:
            self.on_node(str(data["node"]))

    def queue_updated(self):
        pass


class HeadlessComfy:
    """ComfyUI in this process with this pack loaded; see the module docstring.

    workdir: holds input/, output/, temp/ and models/<kind>/ (added to ComfyUI's model folders).
    host: the ComfyUI folder (default: `find_comfyui()`). cpu: force the CPU (default: when no CUDA).
    """

    def __init__(self, workdir: Path, host: Path | None = None, cpu: bool | None = None):
        import torch

        self.workdir = Path(workdir)
        for name in (
            "input",
            "output",
            "temp",
            "user",
            "web",
            "models/checkpoints",
            "models/diffusion_models",
        ):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        host_path = str(host or find_comfyui())
        if host_path not in sys.path:
            sys.path.insert(0, host_path)
        from comfy.cli_args import args

        args.cpu = (not torch.cuda.is_available()) if cpu is None else cpu
        # no page is served: the server object below takes this empty folder as its web root instead of
        # the frontend package (which a machine running only the headless host may lack)
        args.front_end_root = str(self.workdir / "web")
        import folder_paths

        folder_paths.set_input_directory(str(self.workdir / "input"))
        folder_paths.set_output_directory(str(self.workdir / "output"))
        folder_paths.set_temp_directory(str(self.workdir / "temp"))
        folder_paths.set_user_directory(str(self.workdir / "user"))
        for kind in ("checkpoints", "diffusion_models"):
            folder_paths.add_model_folder_path(kind, str(self.workdir / "models" / kind), is_default=True)
        # main.py imports ComfyUI's `utils` package before `nodes`, which puts comfy/ (holding a module
        # named utils.py) first on sys.path; do the same so `utils.*` stays the package.
        importlib.import_module("utils.install_util")
        import execution

        import nodes

        self.folder_paths = folder_paths
        self.nodes = nodes
        self.execution = execution
        # ComfyUI's server object, made as main.py makes it and never started (no socket, no route
        # served): core nodes and their comfy_entrypoints reach for `PromptServer.instance` and its parts
        # (newer ComfyUI registers node replacements on it while the extras load).
        import server

        self.server = server.PromptServer(asyncio.new_event_loop())
        # the built-in extra node modules that did not load (ComfyUI logs why; the tests check it)
        self.extras_not_loaded = list(
            asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False)) or []
        )
        before = set(nodes.NODE_CLASS_MAPPINGS)
        if not asyncio.run(nodes.load_custom_node(str(PACK_ROOT), module_parent="custom_nodes")):
            raise RuntimeError("ComfyUI could not load the DiffFERV pack (see the log above)")
        self.pack_node_ids = sorted(set(nodes.NODE_CLASS_MAPPINGS) - before)
        self.log = MessageLog()
        # no output cache between workflows: each one runs in full
        self.executor = execution.PromptExecutor(
            self.log, cache_type=execution.CacheType.NONE, cache_args=dict(EXECUTOR_CACHE_OFF)
        )

    def add_model_folder(self, kind: str, folder: Path) -> None:
        """Make ComfyUI find models of `kind` (e.g. "checkpoints") in `folder` too."""
        self.folder_paths.add_model_folder_path(kind, str(folder))

    def node_class(self, node_id: str):
        return self.nodes.NODE_CLASS_MAPPINGS[node_id]

    def run_node(self, node_id: str, hidden: dict | None = None, **inputs):
        """Execute one node the way ComfyUI's executor does (V3 class clone, hidden inputs, list
        mapping, inference mode). Returns (outputs tuple, ui dict)."""
        import torch

        cls = self.node_class(node_id)
        node = cls if hasattr(cls, "GET_SCHEMA") else cls()  # V3 classes as they are, V1 instantiated
        with torch.inference_mode():
            output, ui, _, _ = asyncio.run(
                self.execution.get_output_data(
                    "headless",
                    "1",
                    node,
                    {k: [v] for k, v in inputs.items()},
                    **hidden_inputs(self.execution.get_output_data, hidden or {}),
                )
            )
        return tuple(values[0] for values in output), ui

    def validate(self, prompt: dict, prompt_id: str = "validation") -> tuple[list[NodeProblem], list[str]]:
        """ComfyUI's validator on an API-form workflow (no node runs): (problems, output nodes to run)."""
        valid = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        if valid[0] and not valid[3]:
            return [], valid[2]
        return validation_problems(prompt, valid[1], valid[3]), valid[2]

    def run_prompt(
        self, prompt: dict, on_progress: ProgressHook | None = None, on_node: NodeHook | None = None
    ) -> dict:
        """Validate and execute an API-form workflow; returns {node id: ui output}. `on_progress` hears
        every progress bar, `on_node` every node the executor starts. Raises PromptError with ComfyUI's
        own error text when validation or execution fails. Unlike ComfyUI's server, it runs nothing when
        any node fails validation (the server would run the outputs that passed)."""
        import comfy.utils

        prompt_id = str(uuid.uuid4())
        problems, outputs = self.validate(prompt, prompt_id)
        if problems:
            raise PromptError.reported("validation", problems)
        from comfy_execution.utils import get_executing_context

        def hook(value, total, preview=None, prompt_id=None, node_id=None):
            context = get_executing_context()  # where main.py's hook finds the node
            on_progress(value, total, node_id or (context.node_id if context is not None else None))

        previous = comfy.utils.PROGRESS_BAR_HOOK
        if on_progress is not None:
            comfy.utils.set_progress_bar_global_hook(hook)
        self.log.on_node = on_node
        try:
            # the executor reports node starts only to a client
            extra = {"client_id": "headless"} if on_node is not None else {}
            self.executor.execute(prompt, prompt_id, extra, outputs)
        finally:
            comfy.utils.set_progress_bar_global_hook(previous)
            self.log.on_node = None
            give_back_memory()
        if not self.executor.success:
            raise failure(self.executor.status_messages)
        return self.executor.history_result["outputs"]

    def output_path(self, saved: dict) -> Path:
        """The file behind a node's ui entry {"filename", "subfolder", "type"}."""
        root = {"output": "output", "temp": "temp", "input": "input"}[saved["type"]]
        return self.workdir / root / saved["subfolder"] / saved["filename"]


def give_back_memory() -> None:
    """Hand the memory a finished workflow freed back to the system: Python's cycles collected, then
    glibc's free heap pages released (`malloc_trim`; glibc otherwise keeps them for reuse, so a process
    that runs workflow after workflow, a long edit's segments, holds more after each, measured: 2.6 GB
    after the first of 7 segments, 4.9 GB after the last; 1.0 GB after each with this). No-op without
    glibc."""
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)


@dataclass
class InProcessExecutor:
    """The executor contract (``executor.Executor``) kept by a `HeadlessComfy` in this process. Its
    coroutines never suspend, and ComfyUI's executor runs event loops of its own, so a caller outside any
    event loop drives a run through it with `completed` rather than ``asyncio.run``."""

    comfy: HeadlessComfy

    async def put_clip(self, video: Path) -> str:
        shutil.copy(video, self.comfy.workdir / "input" / video.name)
        return video.name

    async def run(self, prompt: dict, on_progress: ProgressHook | None, on_node: NodeHook | None) -> dict:
        return self.comfy.run_prompt(prompt, on_progress=on_progress, on_node=on_node)

    async def fetch(self, outputs: dict, wanted: dict[str, str], folder: Path) -> dict[str, Path]:
        return {key: self.comfy.output_path(outputs[node_id]["images"][0]) for node_id, key in wanted.items()}


def completed(coroutine: Coroutine[object, None, T]) -> T:
    """The result of `coroutine`, run to its end in this thread without an event loop: for a coroutine
    whose awaits never suspend (``InProcessExecutor``'s), inside which ComfyUI may start loops of its own."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("completed() got a coroutine that waits on an event loop; run it with asyncio.run")
