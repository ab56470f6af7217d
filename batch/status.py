"""The batch's status file, `batch_status.json` in the output folder: per job (by its key) whether it is
done or failed, on which server (its display URL: no credentials), in how many seconds, its outputs
(names in the output folder) and, for a failure, its sentence. A second run skips the jobs recorded done
whose outputs are all there. Written whole to a hidden file and renamed into place after each job, so
an interrupted run leaves the last complete state."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .jobs import Job

STATUS_FILE = "batch_status.json"
DONE, FAILED = "done", "failed"


class StatusFile:
    """The status of the jobs run into `folder` (read at start; empty when there is none or it is not
    readable JSON)."""

    def __init__(self, folder: Path):
        self.path = folder / STATUS_FILE
        try:
            self.entries: dict[str, dict] = json.loads(self.path.read_text())["jobs"]
        except (OSError, ValueError, KeyError, TypeError):
            self.entries = {}

    def is_done(self, job: Job) -> bool:
        """Recorded done, with every output still there."""
        entry = self.entries.get(job.key)
        return bool(entry) and entry["state"] == DONE and all(path.is_file() for path in job.outputs())

    def record(self, job: Job, state: str, server: str, seconds: float, message: str | None = None) -> None:
        """Record the job's end and write the file."""
        self.entries[job.key] = {
            "line": job.number,
            "video": job.checked.video.name,
            "state": state,
            "server": server,
            "seconds": round(seconds, 1),
            "outputs": [str(path.relative_to(self.path.parent)) for path in job.outputs()]
            if state == DONE
            else [],
            **({"message": message} if message else {}),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{STATUS_FILE}.partial")
        partial.write_text(json.dumps({"jobs": self.entries}, indent=1) + "\n")
        os.replace(partial, self.path)
