"""The batch's status file, `batch_status.json` in the output folder: per job (by its key) whether it is
done or failed, its line's words, on which server (its display URL: no credentials), in how many seconds,
its outputs (names in the output folder, with their sizes) and, for a failure, its sentence. A second run
skips a job only when it is recorded done for the same words and every output it recorded is there with
the size it had. Written whole to a hidden file and renamed into place after each job and on the way out,
so an interrupted run leaves the last complete state."""

from __future__ import annotations

import json
from pathlib import Path

from ..video.staged import staged
from .jobs import Job

STATUS_FILE = "batch_status.json"
DONE, FAILED = "done", "failed"


class StatusFile:
    """The status of the jobs run into `folder` (read at start; empty when there is none or it is not
    readable JSON)."""

    def __init__(self, folder: Path):
        self.path = folder / STATUS_FILE
        try:
            entries = json.loads(self.path.read_text())["jobs"]
        except (OSError, ValueError, KeyError, TypeError):
            entries = {}
        self.entries: dict[str, dict] = entries if isinstance(entries, dict) else {}

    def is_done(self, job: Job) -> bool:
        """Recorded done for this job's words, with every output it wrote still there at its size."""
        entry = self.entries.get(job.key)
        if not isinstance(entry, dict) or entry.get("state") != DONE or entry.get("words") != list(job.words):
            return False
        recorded = entry.get("outputs")
        if not isinstance(recorded, list) or len(recorded) != len(job.outputs()):
            return False
        folder = self.path.parent
        for output, path in zip(recorded, job.outputs(), strict=True):
            if not isinstance(output, dict) or folder / str(output.get("name")) != path:
                return False
            if not path.is_file() or path.stat().st_size != output.get("bytes"):
                return False
        return True

    def record(self, job: Job, state: str, server: str, seconds: float, message: str | None = None) -> None:
        """Record the job's end and write the file."""
        outputs = []
        if state == DONE:
            outputs = [
                {"name": str(path.relative_to(self.path.parent)), "bytes": path.stat().st_size}
                for path in job.outputs()
            ]
        self.entries[job.key] = {
            "line": job.number,
            "words": list(job.words),
            "video": job.checked.video.name,
            "state": state,
            "server": server,
            "seconds": round(seconds, 1),
            "outputs": outputs,
            **({"message": message} if message else {}),
        }
        self.write()

    def write(self) -> None:
        """Write the file (its folder made again if it was removed)."""
        with staged([self.path]) as (partial,):
            partial.write_text(json.dumps({"jobs": self.entries}, indent=1) + "\n")
