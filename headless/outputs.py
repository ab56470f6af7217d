"""The `edit` command's outputs: the files ComfyUI wrote copied to the user's paths, all or none, and the
Edit Report printed and written beside the video."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ..remote.answers import Origin, field, items, obj
from ..video.staged import staged
from .graph import ApiGraph
from .workflow import EDIT_REPORT


def write_outputs(targets: list[tuple[Path, str]], show: bool = True) -> None:
    """Copy each produced file to its target, all or none (`video.staged`)."""
    paths = [Path(target).expanduser().resolve() for _, target in targets]
    with staged(paths) as partials:
        for (produced, _), partial in zip(targets, partials, strict=True):
            shutil.copyfile(produced, partial)
    if show:
        for path in paths:
            print(f"wrote {path}", file=sys.stderr)


def write_report(prompt: dict, outputs: dict, video: Path, show: bool = True) -> Path:
    """Writes the Edit Report node's JSON beside ``video`` (``NAME.report.json``) and, with `show`,
    prints its text."""
    text, report = report_of(prompt, outputs)
    if show:
        print(text)
    target = report_path(video)
    target.write_text(report + "\n")
    if show:
        print(f"wrote {target}", file=sys.stderr)
    return target


def report_of(prompt: dict, outputs: dict) -> tuple[str, str]:
    """The Edit Report node's text and JSON in a run's outputs."""
    where = Origin("the run", "its Edit Report output")
    shown = obj(outputs.get(ApiGraph(prompt).only(EDIT_REPORT)), where)
    text, report = (items(field(shown, key, list, where), str, where, key) for key in ("text", "report"))
    if not text or not report:
        raise where.error("no text or no report")
    return text[0], report[0]


def report_path(video: str | Path) -> Path:
    """Where the Edit Report's JSON of the edited video `video` goes: beside it, NAME.report.json."""
    return Path(video).expanduser().resolve().with_suffix(".report.json")
