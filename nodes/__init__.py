"""ComfyUI nodes of the pack (V3 schema). Thin: they parse inputs, call the core packages, shape outputs."""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .ddim_inversion import DDIMInvertWithCache
from .inject_sampler import PreservationInjectSampler
from .load_video import LoadVideo
from .specialized_unet import LoadSpecializedUNet
from .temporal_attention import ApplyTemporalAttention
from .trajectories import ComputeFlowTrajectories
from .video_combine import VideoCombine


class DiffFERVExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            LoadVideo,
            LoadSpecializedUNet,
            ComputeFlowTrajectories,
            ApplyTemporalAttention,
            DDIMInvertWithCache,
            PreservationInjectSampler,
            VideoCombine,
        ]
