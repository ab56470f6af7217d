"""ComfyUI's refusals and failures in the `edit` command's terms: a problem ComfyUI's validator or
executor reported on a node input is said with the flag that sets that input, and a file the command put
into ComfyUI's folders with the user's own path."""

from __future__ import annotations

import re
from pathlib import Path

from ..comfyhost.executor import NodeProblem, PromptError
from .cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_REFUSED, CommandError
from .flags import SETTINGS


def in_user_terms(problem: NodeProblem, titles: dict, files: dict[str, Path]) -> str:
    """A problem ComfyUI reported, in the command's terms: the node input it names becomes its flag, and
    a file the command put into ComfyUI's folders (`files`: node class -> the user's path) is named by the
    user's path."""
    flags = {s.input: s.flag for s in SETTINGS if s.node == problem.class_type}
    message = problem.message
    named = next((name for name in flags if message.startswith((f"{name} ", f"{name}:"))), None)
    if named is not None:
        message = flags[named] + message[len(named) :]
    elif problem.input_name in flags:
        message = f"{flags[problem.input_name]}: {message}"
    else:
        message = f"{titles.get(problem.node_id, problem.class_type or 'ComfyUI')}: {message}"
    user_path = files.get(problem.class_type)
    if user_path is not None:
        message = re.sub(rf"(?<![\w/.-]){re.escape(user_path.name)}", lambda _: str(user_path), message)
    return message


class WorkflowFailedError(CommandError):
    """ComfyUI refused or failed the workflow (see PromptError), with what the command needs to say it
    (node titles, node class -> the user's path of the file it read)."""

    def __init__(self, error: PromptError, titles: dict[str, str], files: dict[str, Path]):
        super().__init__(str(error))
        self.error, self.titles, self.files = error, titles, files

    def lines(self, verbose: bool) -> list[str]:
        said = [in_user_terms(problem, self.titles, self.files) for problem in self.error.problems]
        if self.error.stage != "execution":
            return said
        if verbose:
            return [problem.traceback for problem in self.error.problems if problem.traceback] + said
        return [f"{line} (run with --verbose for the traceback)" for line in said]

    @property
    def status(self) -> int:
        return {"validation": EXIT_REFUSED, "interrupted": EXIT_INTERRUPTED}.get(
            self.error.stage, EXIT_FAILED
        )
