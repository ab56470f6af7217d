"""A long edit's output written as its segments finish, and kept on disk until the last one has, so that
an interrupted edit (Ctrl-C, a lost server, a crash) resumes from where it stopped and never edits a
finished segment again.

Everything lives in a folder beside the output, ``.NAME.segments/`` (`SegmentFolder`):
- ``run.json``: what the edit is (the caller's key: flags, clip, models) and its segments; a folder made
  for another edit is cleared;
- ``seg_0003_edit.mkv``: a segment's produced video (each product: the edit, the comparison), lossless,
  renamed into place once whole: the segment is edited;
- ``part_0003_edit.mp4``, ``tail_0003_edit.npy`` and ``part_0003.done``: the segment written
  (`Assembler.write`): its frames, the shared ones blended with the segment before (segments.blend),
  encoded in the output's format, except those the next segment fades in over, kept as they are in the
  tail. The produced video is then deleted.

When every segment is written the parts are joined into the outputs without encoding them again, with
the source's sound muxed once (video.join), all outputs or none; then the folder is removed. Memory: one
frame, plus one overlap of frames per product."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..video.decode import video_frames
from ..video.encode import Sound, VideoFormat, VideoWriter
from ..video.join import join_videos
from ..video.staged import staged
from .blend import crossfade, fade_in_weights
from .plan import Segment

PRODUCED = "mkv"
"""The extension of a segment's produced videos (`video.encode.FORMATS`' lossless ffv1)."""


@dataclass(frozen=True)
class Output:
    """One video the long edit writes: its product's name (the segment's file of it), the user's path,
    its format and quality (Video Combine's)."""

    product: str
    path: Path
    format: VideoFormat
    quality: int


def segments_folder(output: Path) -> Path:
    """Where the long edit to `output` keeps its segments: ``.NAME.segments/`` beside it."""
    return output.parent / f".{output.name}.segments"


class SegmentFolder:
    """The folder of a long edit's progress beside `output` (see the module docstring). `key`: what makes
    two runs the same edit (JSON); a folder holding another key is cleared (`cleared` says so)."""

    def __init__(self, output: Path, key: dict, segments: Sequence[Segment], products: Sequence[str]):
        self.path = segments_folder(output)
        self.segments = list(segments)
        self.products = tuple(products)
        run = {"key": key, "segments": [[s.start, s.frames] for s in self.segments]}
        record = self.path / "run.json"
        self.cleared = False
        if self.path.is_dir():
            try:
                same = json.loads(record.read_text()) == run
            except (OSError, ValueError):
                same = False
            if not same:
                shutil.rmtree(self.path)
                self.cleared = True
        self.path.mkdir(parents=True, exist_ok=True)
        if not record.is_file():
            with staged([record]) as (partial,):
                partial.write_text(json.dumps(run))

    def produced(self, index: int, product: str) -> Path:
        return self.path / f"seg_{index:04d}_{product}.{PRODUCED}"

    def part(self, index: int, output: Output) -> Path:
        return self.path / f"part_{index:04d}_{output.product}.{output.format.extension}"

    def tail(self, index: int, product: str) -> Path:
        return self.path / f"tail_{index:04d}_{product}.npy"

    def done_marker(self, index: int) -> Path:
        return self.path / f"part_{index:04d}.done"

    def is_written(self, index: int) -> bool:
        return self.done_marker(index).is_file()

    def is_edited(self, index: int) -> bool:
        """The segment is written, or its produced videos are all here."""
        return self.is_written(index) or all(self.produced(index, p).is_file() for p in self.products)

    def keep(self, index: int, files: dict[str, Path], notes: dict[str, str] | None = None) -> None:
        """Move a segment's produced videos (product -> its file, anywhere) into place, the last one's
        rename marking it edited; `notes`: text files kept with it (name -> text, e.g. its Edit Report),
        read back with `note`."""
        for name, text in (notes or {}).items():
            with staged([self.path / f"note_{index:04d}_{name}"]) as (partial,):
                partial.write_text(text)
        with staged([self.produced(index, product) for product in self.products]) as partials:
            for product, partial in zip(self.products, partials, strict=True):
                shutil.move(files[product], partial)  # a copy first where the file is on another drive

    def note(self, index: int, name: str) -> str:
        return (self.path / f"note_{index:04d}_{name}").read_text()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class Assembler:
    """Writes the segments' produced videos into the outputs' parts, in order (`write`), and joins the
    parts when all are written (`finish`); see the module docstring. `fps`: the edit's frame rate."""

    def __init__(self, folder: SegmentFolder, outputs: Sequence[Output], fps: float):
        self.folder = folder
        self.outputs = list(outputs)
        self.fps = fps

    def next_to_write(self) -> int:
        """The first segment not written yet (len(segments) when all are)."""
        return next(
            (s.index for s in self.folder.segments if not self.folder.is_written(s.index)),
            len(self.folder.segments),
        )

    def write(self, index: int) -> None:
        """Write segment `index` (edited; every segment before it written) into each output's part."""
        segment = self.folder.segments[index]
        for output in self.outputs:
            self._write_part(segment, output)
        self.folder.done_marker(index).touch()
        for output in self.outputs:
            self.folder.produced(index, output.product).unlink(missing_ok=True)
            if index:
                self.folder.tail(index - 1, output.product).unlink(missing_ok=True)

    def _write_part(self, segment: Segment, output: Output) -> None:
        folder = self.folder
        earlier = np.load(folder.tail(segment.index - 1, output.product)) if segment.blend_in else None
        weights = fade_in_weights(segment.blend_in)
        keep_from = segment.frames - segment.blend_out
        tail, count = [], 0
        written = [folder.part(segment.index, output)]
        if segment.blend_out:
            written.append(folder.tail(segment.index, output.product))
        produced = video_frames(folder.produced(segment.index, output.product))
        with staged(written) as (part, *kept_tail):
            with VideoWriter(part, self.fps, output.format, output.quality) as writer:
                for position, frame in enumerate(produced):
                    if position < segment.blend_in:
                        frame = crossfade(earlier[position], frame, float(weights[position]))
                    if position >= keep_from:
                        tail.append(frame)
                    else:
                        writer.write(frame)
                    count += 1
            if count != segment.frames:
                raise ValueError(
                    f"segment {segment.index + 1} made {count} frames of {output.product} where it edits "
                    f"{segment.frames}"
                )
            for path in kept_tail:
                np.save(path, np.stack(tail))

    def finish(self, sound: Callable[[], Sound] | None) -> list[Path]:
        """Join each output's parts into its path, with the sound `sound()` gives (the edited span's
        audio, read while it is muxed: a reader per output), all or none. Returns the paths written; the
        caller removes the folder when it has read what it needs of it."""
        with staged([output.path for output in self.outputs]) as partials:
            for output, partial in zip(self.outputs, partials, strict=True):
                parts = [self.folder.part(s.index, output) for s in self.folder.segments]
                join_videos(parts, partial, output.format, sound() if sound is not None else None)
        return [output.path for output in self.outputs]
