"""The choices and ranges of the mask settings, shared by the nodes (Face Mask's inputs, the sampler's
feather) and the `edit` command (its --mask flags), so both offer and refuse the same values. Imports only
the settings declaration: the command reads it before anything heavy loads.
"""

from __future__ import annotations

from ..settings import Choice, Number

REGIONS = ("face", "face+hair")
"""Face regions (regions.py): the hull of the 68 landmarks; that hull with the forehead and hair above it."""
PICK_RULES = ("largest", "left-to-right")
"""How the faces of a frame are counted (tracking.py): largest first, or from the left."""
REGION = Choice("face", REGIONS)
"""Face Mask's region."""
PICK = Choice("largest", PICK_RULES)
"""Face Mask's pick rule."""
GROW_PX = Number(8, 0, 256)
"""Pixels a face region is grown by on every side."""
FACE_INDEX = Number(0, 0, 31)
"""Which face, counted by the pick rule, from 0."""
FEATHER_PX = Number(8, 0, 128)
"""Pixels over which the sampler softens a mask's edge, on each side."""
