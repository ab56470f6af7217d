"""The branch `specialize --branch` trains, checked before any data is read: options of another branch
refused, the branch's networks and files opened, and the metadata that says which losses made the UNet."""

from __future__ import annotations

from pathlib import Path

from .flags import parser

BRANCH_OPTIONS = {
    "identity": ("identity_model", "l1_weight", "identity_weight"),
    "edit": ("clip", "edit_phrases", "lambda1", "lambda2"),
}
"""Options that belong to one branch: given with another branch they are refused (they would do nothing)."""


def check_branch(args, log=print):
    """The branch's networks, every file checked before any data is read or model loaded: returns a
    callable (tokenizer) -> image objective, or None for the specialization branch; and the export metadata
    that says which losses made the UNet. Raises with the file and the reason."""
    from .train import SettingsError

    defaults = parser()
    for branch, names in BRANCH_OPTIONS.items():
        given = [n for n in names if getattr(args, n) != defaults.get_default(n)]
        if given and args.branch != branch:
            options = ", ".join("--" + n.replace("_", "-") for n in given)
            raise SettingsError(f"{options} belong to --branch {branch}, not --branch {args.branch}")
    if args.branch == "specialization":
        return None, {"diffferv.branch": "specialization", "diffferv.losses": "epsilon"}
    cap = f"image loss at t <= {args.max_image_timestep}"
    if args.branch == "identity":
        from ..faces.dlib_models import face_models
        from ..faces.identity import ArcFaceIdentity, DlibIdentity
        from ..faces.onnx_graph import UnsupportedOnnxError
        from .objectives import IdentityObjective

        models = face_models()  # the landmarks come from dlib in either case
        if args.identity_model == "dlib":
            network = DlibIdentity(models.resnet)
        else:
            path = Path(args.identity_model)
            if not path.is_file():
                raise FileNotFoundError(f"--identity-model {path}: file not found (or give 'dlib')")
            if path.suffix.lower() != ".onnx":
                raise SettingsError(
                    f"--identity-model {path.name}: expected an InsightFace .onnx file or 'dlib'"
                )
            try:
                network = ArcFaceIdentity(path)
            except UnsupportedOnnxError as error:
                raise UnsupportedOnnxError(f"--identity-model {error}") from error
            log(f"note: {network.licence}")
        losses = (
            f"epsilon + {args.l1_weight:g} L1(x0_hat, y0) + {args.identity_weight:g} "
            f"identity cosine distance ({network.name}); {cap}"
        )
        metadata = {"diffferv.identity_model": network.name}
        objective = IdentityObjective(network, args.l1_weight, args.identity_weight)
        return (lambda tokenizer: objective), {
            "diffferv.branch": "identity",
            "diffferv.losses": losses,
            **metadata,
        }
    from .clip_direction import DirectionalClipLoss, check_clip_file, load_clip, read_edit_phrases
    from .objectives import EditObjective

    if args.clip is None:
        raise SettingsError(
            "--branch edit needs --clip: a two-tower CLIP .safetensors in transformers' layout (e.g. OpenAI "
            "ViT-L/14's model.safetensors)"
        )
    check_clip_file(args.clip)
    phrases = read_edit_phrases(args.edit_phrases)
    losses = (
        f"epsilon + directional CLIP ({args.clip.name}): {args.lambda1:g} image distance + {args.lambda2:g} "
        f"direction, {len(phrases)} edit phrases; {cap}"
    )

    def make(tokenizer):
        return EditObjective(
            DirectionalClipLoss(load_clip(args.clip), args.lambda1, args.lambda2), tokenizer, phrases
        )

    return make, {"diffferv.branch": "edit", "diffferv.losses": losses, "diffferv.clip": args.clip.name}
