"""What trained a UNet file: the metadata the `specialize` command writes, in words for the loader node."""

from __future__ import annotations

from collections.abc import Mapping

BRANCH_USES = {
    "specialization": "face-specialized SD1.5 UNet (DiffFERV): use it for both the inversion and the sampler",
    "identity": "IP-FaceDiff's identity-preserving UNet: use it for the inversion (DDIM Invert With Cache)",
    "edit": "IP-FaceDiff's edit UNet: use it for the sampler (Preservation Inject Sampler)",
}
"""What each `specialize --branch` export is for."""


def training_summary(metadata: Mapping[str, str]) -> str:
    """What trained a UNet file, from the metadata the `specialize` command writes (branch, losses, step,
    base, data): lines of text; empty for a file that command did not write."""
    if "diffferv.step" not in metadata:
        return ""
    branch = metadata.get("diffferv.branch", "specialization")  # files from before the branches
    lines = [f"{branch} branch: {BRANCH_USES.get(branch, 'unknown branch')}"]
    lines.append(f"losses: {metadata.get('diffferv.losses', 'epsilon')}")
    data = (
        f"{metadata.get('diffferv.faces', '?')} face / {metadata.get('diffferv.general', '?')} general pairs"
    )
    lines.append(f"step {metadata['diffferv.step']}, base {metadata.get('diffferv.base', '?')}, {data}")
    return "\n".join(lines)
