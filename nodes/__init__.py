"""ComfyUI nodes of the pack (V3 schema) and the thin glue between them and the core.

Node modules parse inputs, call the core packages (attention, flow, editing, video, unet, windows, metrics,
faces, masks, keyframes), shape outputs; the glue modules (common, attention_patches, preservation_glue,
window_glue) adapt the core to ComfyUI's model patcher and samplers. Everything may be imported here;
nothing outside nodes/ imports nodes/.
"""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .context_windows import ContextWindows
from .ddim_inversion import DDIMInvertWithCache
from .edit_report import EditReport
from .face_mask import FaceMask
from .inject_sampler import PreservationInjectSampler
from .keyframes import PropagateKeyframeEdit, SelectKeyframes
from .load_video import LoadVideo
from .server_info import add_routes
from .specialized_unet import LoadSpecializedUNet
from .temporal_attention import ApplyTemporalAttention
from .trajectories import ComputeFlowTrajectories
from .video_combine import VideoCombine


class DiffFERVExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        add_routes()  # GET /diffferv/info, when ComfyUI runs its server
        return [
            LoadVideo,
            LoadSpecializedUNet,
            ComputeFlowTrajectories,
            ApplyTemporalAttention,
            ContextWindows,
            DDIMInvertWithCache,
            PreservationInjectSampler,
            VideoCombine,
            EditReport,
            FaceMask,
            SelectKeyframes,
            PropagateKeyframeEdit,
        ]
