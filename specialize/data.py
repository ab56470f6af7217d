"""Training data of the specialization command: image-caption pairs, checked, mixed and augmented.

DiffFERV section 3.2: face images with captions, plus a share of general image-text pairs (10% in the
paper) so the model keeps its general prior, and zoom/rotation augmentation of the faces so it does not
learn that every face is cropped and centred. No ComfyUI import.

A folder holds images (any depth) and their captions, as a sidecar text file (``photo.jpg`` ->
``photo.txt``) or as lines of a JSON-lines file (``{"file_name": "sub/photo.jpg", "text": "..."}``;
``metadata.jsonl`` in the folder is read by default, the Hugging Face imagefolder convention). A sidecar
wins over a JSON line. Nothing is dropped silently: every unusable file is listed with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from kornia.augmentation import RandomAffine
from PIL import Image, ImageOps

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
CAPTIONS_FILE = "metadata.jsonl"


class DataError(ValueError):
    """Unusable training data; the message names the file or folder and what to do."""


@dataclass(frozen=True)
class Pair:
    image: Path
    caption: str


@dataclass
class Scan:
    """One folder, checked: usable pairs, readable images without a caption, and problems by file."""

    pairs: list[Pair] = field(default_factory=list)
    uncaptioned: list[Path] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def read_captions_file(path: Path) -> dict[str, str]:
    """{relative image path: caption} from a JSON-lines file; a malformed line is refused by number."""
    captions = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            name = entry.get("file_name") or entry["file"]
            text = entry.get("text", entry.get("caption"))
        except (json.JSONDecodeError, KeyError, AttributeError) as error:
            raise DataError(
                f"{path}, line {number}: expected a JSON object with 'file_name' and 'text' ({error})"
            ) from error
        if not isinstance(text, str):
            raise DataError(f"{path}, line {number}: 'text' of {name} must be a string")
        captions[Path(name).as_posix()] = text.strip()
    return captions


def scan_folder(folder: Path, captions_file: Path | None = None) -> Scan:
    """Find the images of `folder`, check each opens as an image, and pair it with its caption.
    Raises DataError for a missing folder or one without images. Cost: one header read per image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DataError(
            f"{folder}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))} in all sub-folders)"
        )
    captions_file = captions_file or (folder / CAPTIONS_FILE if (folder / CAPTIONS_FILE).is_file() else None)
    listed = read_captions_file(captions_file) if captions_file else {}
    scan = Scan()
    for name in sorted(set(listed) - {p.relative_to(folder).as_posix() for p in images}):
        scan.problems.append((folder / name, f"listed in {captions_file.name} but no such image"))
    for image in images:
        try:
            with Image.open(image) as opened:
                opened.verify()
        except Exception as error:  # PIL raises many types (OSError, SyntaxError, ValueError...)
            scan.problems.append((image, f"unreadable image ({type(error).__name__}: {error})"))
            continue
        sidecar = image.with_suffix(".txt")
        caption = sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else None
        if not caption:
            caption = listed.get(image.relative_to(folder).as_posix())
        if caption:
            scan.pairs.append(Pair(image, caption))
        else:
            scan.uncaptioned.append(image)
    return scan


def load_image(path: Path, size: int) -> torch.Tensor:
    """An image as a [3, size, size] float tensor in [-1, 1]: EXIF rotation applied, the shorter side
    scaled to `size`, the longer one centre-cropped."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.fit(
                ImageOps.exif_transpose(opened).convert("RGB"), (size, size), Image.Resampling.LANCZOS
            )
    except Exception as error:  # the file changed or broke after the scan
        raise DataError(
            f"{path}: cannot decode ({type(error).__name__}: {error}); remove it and resume"
        ) from error
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 127.5 - 1.0


class PairDataset(torch.utils.data.Dataset):
    """Faces first, then general pairs: item i -> (image [3, S, S], caption, is_face, landmarks [5, 2]).
    ``landmarks`` [faces, 5, 2]: dlib's 5 points of each face image at size S (NaN: none found, and
    always for general pairs)."""

    def __init__(
        self, faces: list[Pair], general: list[Pair], size: int, landmarks: torch.Tensor | None = None
    ):
        self.pairs = faces + general
        self.faces = len(faces)
        self.size = size
        self.landmarks = torch.full((len(self.pairs), 5, 2), float("nan"))
        if landmarks is not None:
            self.landmarks[: len(faces)] = landmarks

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        pair = self.pairs[index]
        return load_image(pair.image, self.size), pair.caption, index < self.faces, self.landmarks[index]


class MixedSampler(torch.utils.data.Sampler):
    """An endless, reproducible stream of PairDataset indices. Each epoch holds every face once and
    round(faces * share / (1 - share)) general pairs (drawn without repeats while there are enough), in a
    shuffled order that depends only on (seed, epoch); `start` skips that many samples (resuming).
    `general_share` is in inputs.GENERAL_SHARE's range (TrainSettings.check)."""

    def __init__(self, faces: int, general: int, general_share: float, seed: int, start: int = 0):
        if general_share > 0 and general == 0:
            raise DataError("a general share above 0 needs general image-text pairs")
        self.faces, self.general = faces, general
        self.drawn = round(faces * general_share / (1.0 - general_share))
        self.seed, self.start = seed, start

    @property
    def epoch_length(self) -> int:
        return self.faces + self.drawn

    def epoch(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.drawn <= self.general:
            general = torch.randperm(self.general, generator=generator)[: self.drawn]
        else:
            general = torch.randint(self.general, (self.drawn,), generator=generator)
        order = torch.cat([torch.arange(self.faces), self.faces + general])
        return order[torch.randperm(len(order), generator=generator)]

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.epoch_length)
        while True:
            yield from self.epoch(epoch)[offset:].tolist()
            epoch, offset = epoch + 1, 0


def face_augmentation(max_rotation: float, zoom: tuple[float, float], probability: float) -> RandomAffine:
    """Random rotation in [-max_rotation, max_rotation] degrees and zoom (scale) in `zoom`, applied to each
    image with the given probability; borders uncovered by zooming out are filled by reflection."""
    return RandomAffine(degrees=max_rotation, scale=zoom, padding_mode="reflection", p=probability)


def augment_faces(
    augment: RandomAffine, images: torch.Tensor, is_face: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment the face images of a [B, 3, H, W] batch (general pairs are left as they are). Returns the
    images and the affine matrices [B, 3, 3] (pixels in -> pixels out; identity where not augmented)."""
    matrices = torch.eye(3, device=images.device).repeat(len(images), 1, 1)
    if not is_face.any():
        return images, matrices
    out = images.clone()
    out[is_face] = augment(images[is_face])
    matrices[is_face] = augment.transform_matrix.to(matrices)
    return out, matrices
