"""VideoCombine: IMAGE frames (+ optional AUDIO) -> a video file in ComfyUI's output folder, with a preview,
and the result as ComfyUI's VIDEO (for core Save Video, Get Video Components, ...)."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import folder_paths
from comfy.cli_args import args
from comfy_api.latest import InputImpl, Types, io, ui

from ..video.encode import FILENAME_PREFIX, FORMAT, FORMATS, FPS, QUALITY, write_video
from .common import CATEGORY, PREFIX, input_problem, progress


class VideoCombine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=PREFIX + "VideoCombine",
            display_name="Video Combine (DiffFERV)",
            category=CATEGORY,
            description=(
                "Encodes frames into a video file in ComfyUI's output folder and previews it. Accepts IMAGE "
                "batches from any loader (core Get Video Components, VideoHelperSuite, DiffFERV Load Video)."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The frames, in order (an IMAGE batch)."),
                io.Float.Input(
                    "fps",
                    **FPS.widget(),
                    tooltip="Frames per second of the written video. Wire the loader's fps output here to keep "
                    "the source timing.",
                ),
                io.String.Input(
                    "filename_prefix",
                    default=FILENAME_PREFIX,
                    tooltip="Name of the file inside ComfyUI's output folder; may contain sub-folders and "
                    "%date:yyyy-MM-dd%-style values. It cannot leave the output folder.",
                ),
                io.Combo.Input(
                    "format",
                    **FORMAT.widget(),
                    tooltip="mp4 (h264) plays everywhere; webm (vp9) for the web; gif and animated webp loop "
                    "in browsers and carry no audio. mp4/webm need even sizes: an odd width or height is "
                    "padded by repeating the last pixel row/column (no content is lost).",
                ),
                io.Int.Input(
                    "quality",
                    **QUALITY.widget(),
                    tooltip=QUALITY.tooltip(
                        "Higher is better and larger. webp uses it as its quality (100 = lossless); gif ignores it."
                    ),
                ),
                io.Boolean.Input(
                    "save_output",
                    default=True,
                    tooltip="On: write to the output folder. Off: write to the temp folder (preview only; "
                    "ComfyUI clears it).",
                ),
                io.Audio.Input(
                    "audio",
                    optional=True,
                    tooltip="Optional soundtrack (e.g. the loader's audio), cut to the video's length. "
                    "Written for mp4 and webm only.",
                ),
            ],
            outputs=[
                io.String.Output("path", display_name="path", tooltip="Absolute path of the written file."),
                io.Video.Output(
                    "video",
                    display_name="video",
                    tooltip="The written video as ComfyUI's VIDEO, for core Save Video, Get Video Components "
                    "and other VIDEO nodes (mp4/webm: the file itself; gif/webp: the frames, rate and audio).",
                ),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, format):
        return input_problem(cls, format=format) or True

    @classmethod
    def execute(cls, images, fps, filename_prefix, format, quality, save_output, audio=None) -> io.NodeOutput:
        if images is None or images.ndim != 4 or images.shape[0] == 0:
            shape = None if images is None else tuple(images.shape)
            raise ValueError(
                f"VideoCombine got no frames (images shape {shape}): connect a non-empty IMAGE batch, e.g. "
                "from Load Video (DiffFERV) or Get Video Components; check the loader's frame range."
            )
        if images.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"VideoCombine expects IMAGE [frames, height, width, 3]; got shape {tuple(images.shape)}"
            )
        if not fps > 0:
            raise ValueError(
                f"VideoCombine: fps must be positive, got {fps}; wire the loader's fps output or type one"
            )
        video_format = FORMATS[format]
        root = folder_paths.get_output_directory() if save_output else folder_paths.get_temp_directory()
        folder_type = io.FolderType.output if save_output else io.FolderType.temp
        height, width = int(images.shape[1]), int(images.shape[2])
        full_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, root, width, height
        )
        # the trailing "_" is what get_save_image_path's counter recognises: without it every run
        # would get counter 1 and overwrite the last file
        file = f"{filename}_{counter:05}_.{video_format.extension}"
        path = Path(full_folder) / file
        write_video(
            path,
            images,
            fps,
            video_format,
            quality,
            audio=audio,
            metadata=cls._metadata(),
            on_frame=progress(int(images.shape[0])),
        )
        preview = ui.PreviewVideo([ui.SavedResult(file, subfolder, folder_type)])
        return io.NodeOutput(os.fspath(path), cls._video(path, images, fps, audio, video_format), ui=preview)

    @staticmethod
    def _video(path: Path, images, fps: float, audio, video_format):
        """The VIDEO value: the file where PyAV reads it back (mp4, webm), else the frames themselves."""
        if video_format.codec is not None:
            return InputImpl.VideoFromFile(os.fspath(path))
        rate = Fraction(fps).limit_denominator(1001)
        return InputImpl.VideoFromComponents(
            Types.VideoComponents(images=images, frame_rate=rate, audio=audio)
        )

    @classmethod
    def _metadata(cls) -> dict[str, str]:
        """The workflow, as core SaveVideo embeds it, so dropping the file on ComfyUI restores the graph."""
        if args.disable_metadata:
            return {}
        metadata = {}
        if cls.hidden.prompt is not None:
            metadata["prompt"] = json.dumps(cls.hidden.prompt)
        for key, value in (cls.hidden.extra_pnginfo or {}).items():
            metadata[key] = json.dumps(value)
        return metadata
