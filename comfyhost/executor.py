"""What running a workflow means for the pack's commands, wherever ComfyUI runs it (in this process:
``comfyhost.runner``; on a server: ``remote.runner``): the progress hooks an executor calls, the problems
ComfyUI reports per node, and `PromptError`, the one exception a refused, failed or interrupted workflow
ends in, built from ComfyUI's own answers (`validation_problems`, `failure`); and `Executor`, what both
executors do for one run (put the clip where the workflow reads it, run, bring the produced files back).
Plain Python, no ComfyUI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ProgressHook = Callable[[int, int, str | None], None]
"""on_progress(value, total, node id): a node's progress bar moved."""
NodeHook = Callable[[str], None]
"""on_node(node id): the executor started a node."""


@dataclass(frozen=True)
class NodeProblem:
    """One thing ComfyUI reported about one node of a workflow: the node's own sentence (a validation
    failure, or the message of the exception it raised) and, for an exception, the traceback."""

    node_id: str | None
    class_type: str | None
    input_name: str | None
    message: str
    traceback: str = ""


class PromptError(RuntimeError):
    """ComfyUI refused (stage "validation"), failed ("execution") or interrupted ("interrupted") a
    workflow; `problems` holds what it reported per node (`reported` builds one whose message says all)."""

    def __init__(self, message: str, stage: str = "execution", problems: list[NodeProblem] | None = None):
        super().__init__(message)
        self.stage = stage
        self.problems = problems or []

    @classmethod
    def reported(cls, stage: str, problems: list[NodeProblem]) -> PromptError:
        what = {"validation": "workflow rejected", "execution": "execution failed"}.get(stage, stage)
        said = "; ".join(f"{p.class_type or 'workflow'} {p.node_id or ''}: {p.message}" for p in problems)
        return cls(f"{what}: {said}", stage, problems)


def validation_problems(prompt: dict, error: dict | None, node_errors: dict) -> list[NodeProblem]:
    """The problems in validate_prompt's answer, one per node and sentence. A node's validate_inputs
    failure is reported by ComfyUI once per input it takes, as "<input> - <sentence>": kept once."""
    problems: list[NodeProblem] = []
    for node_id, entry in node_errors.items():
        for reason in entry.get("errors", []):
            name = reason.get("extra_info", {}).get("input_name")
            details = str(reason.get("details", ""))
            if reason.get("type") == "custom_validation_failed" and details.startswith(f"{name} - "):
                message = details[len(name) + 3 :]
            else:
                message = f"{reason.get('message', '')}: {details}" if details else reason.get("message", "")
            if all(p.message != message or p.node_id != node_id for p in problems):
                problems.append(NodeProblem(node_id, prompt[node_id]["class_type"], name, message))
    if not problems and error:
        problems.append(NodeProblem(None, None, None, f"{error.get('message')}: {error.get('details')}"))
    return problems


def failure(messages: list) -> PromptError:
    """The PromptError for a failed or interrupted run, from ComfyUI's status messages ([event, data]
    pairs: the executor's `status_messages`, or a server's history entry's `status.messages`)."""
    problems, stage = [], "execution"
    for event, data in messages:
        if event == "execution_error":
            problems.append(
                NodeProblem(
                    data["node_id"],
                    data["node_type"],
                    None,
                    str(data["exception_message"]).strip(),
                    "".join(data.get("traceback") or []),
                )
            )
        elif event == "execution_interrupted":
            stage = "interrupted"
            problems.append(NodeProblem(data["node_id"], data["node_type"], None, "interrupted"))
    return PromptError.reported(stage, problems)


class Executor(Protocol):
    """Where a workflow runs: ComfyUI in this process (``comfyhost.runner.InProcessExecutor``) or a ComfyUI
    server (``remote.runner.RemoteExecutor``). Both raise `PromptError` with ComfyUI's own messages when
    the workflow is refused, fails or is interrupted, and call the same progress hooks."""

    async def put_clip(self, video: Path) -> str:
        """Put `video` into the input folder the workflow reads; returns its name there."""
        ...

    async def run(self, prompt: dict, on_progress: ProgressHook | None, on_node: NodeHook | None) -> dict:
        """Validate and execute the API-form `prompt`; returns {node id: ui output}."""
        ...

    async def fetch(self, outputs: dict, wanted: dict[str, str], folder: Path) -> dict[str, Path]:
        """The first file each node of `wanted` (node id -> a key) saved, as a local file (fetched into
        `folder` when it is not on this machine); returns key -> the file."""
        ...
