"""Files written whole or not at all: each is written to a hidden file beside it and renamed into place
only when every file of the group was written, so a crash, Ctrl-C or a failed write never leaves a
half-written video, image or report under the name the user (or a resumed run) looks for."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def partial_path(path: Path) -> Path:
    """The hidden file `path` is written to first: ``.NAME.partial.SUFFIX`` beside it (the suffix kept:
    muxers and image writers go by it)."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


@contextmanager
def staged(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """Yields a partial path for each of `paths` (their folders made) for the caller to write; when the
    block ends without an error each partial replaces its path, in order; whatever happens, no partial is
    left behind."""
    targets = [Path(path) for path in paths]
    partials = [partial_path(path) for path in targets]
    try:
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
        yield partials
        for partial, path in zip(partials, targets, strict=True):
            os.replace(partial, path)
    finally:
        for partial in partials:
            partial.unlink(missing_ok=True)
