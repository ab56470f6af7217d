"""ComfyUI as users run it: main.py serving HTTP on loopback, the pack loaded from outside its folder."""

import shutil

import pytest
import requests
from comfy_harness import ComfyServer, PromptError
from video_probe import probe


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_clip):
    workdir = tmp_path_factory.mktemp("server")
    instance = ComfyServer(workdir)
    shutil.copy(demo_clip, workdir / "input" / demo_clip.name)
    instance.start()
    yield instance
    instance.stop()


def test_object_info_lists_the_pack(server):
    info = requests.get(server.url + "/object_info", timeout=60).json()
    ours = {name: spec for name, spec in info.items() if name.startswith("DiffFERV_")}
    assert {"DiffFERV_LoadVideo", "DiffFERV_VideoCombine"} <= set(ours)
    assert all(spec["category"] == "DiffFERV" for spec in ours.values())
    assert "talking_face.mp4" in info["DiffFERV_LoadVideo"]["input"]["required"]["video"][1]["options"]


def test_prompt_reads_the_demo_clip_and_writes_videos(server, demo_clip, tmp_path):
    combine = {"filename_prefix": "server/clip", "quality": 70, "save_output": True}
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": demo_clip.name}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {
            "class_type": "DiffFERV_VideoCombine",
            "inputs": {"images": ["2", 0], "fps": ["2", 2], "format": "mp4 (h264)", **combine},
        },
        "4": {
            "class_type": "DiffFERV_LoadVideo",
            "inputs": {
                "video": demo_clip.name,
                "max_frames": 12,
                "skip_first_frames": 0,
                "every_nth": 2,
                "short_side": 128,
                "fit": "crop",
            },
        },
        "5": {
            "class_type": "DiffFERV_VideoCombine",
            "inputs": {"images": ["4", 0], "fps": ["4", 1], "format": "webm (vp9)", **combine},
        },
    }
    history = server.wait(server.submit(prompt), timeout=300)
    expected = {"3": ((48, 350, 350, 3), 25.0), "5": ((12, 128, 128, 3), 12.5)}
    for node_id, (shape, fps) in expected.items():
        video = probe(server.download(history["outputs"][node_id]["images"][0], tmp_path))
        assert video.frames.shape == shape
        assert video.fps == pytest.approx(fps)


def test_a_bad_prompt_is_refused_and_the_server_keeps_serving(server, demo_clip, tmp_path):
    """A prompt the validator refuses gets its sentence back from /prompt; one that fails while running
    gets it in its history; the server goes on and runs the next, good prompt."""

    def prompt(**load_inputs) -> dict:
        load = {"max_frames": 4, "skip_first_frames": 0, "every_nth": 1, "short_side": 64, "fit": "crop"}
        return {
            "1": {
                "class_type": "DiffFERV_LoadVideo",
                "inputs": {"video": demo_clip.name, **load, **load_inputs},
            },
            "2": {
                "class_type": "DiffFERV_VideoCombine",
                "inputs": {
                    "images": ["1", 0],
                    "fps": ["1", 1],
                    "filename_prefix": "server/bad_then_good",
                    "format": "webm (vp9)",
                    "quality": 60,
                    "save_output": True,
                },
            },
        }

    reply = requests.post(server.url + "/prompt", json={"prompt": prompt(short_side=100)}, timeout=30)
    assert reply.status_code == 400
    # ComfyUI lists a validate_inputs failure under each input the function takes: same sentence
    details = {error["details"].split(" - ", 1)[1] for error in reply.json()["node_errors"]["1"]["errors"]}
    assert details == {
        "short_side is 100, not a multiple of 64 (the UNet halves the latent three times): use 64 or 128"
    }
    failing = server.submit(prompt(skip_first_frames=1000))
    with pytest.raises(PromptError, match=r"talking_face\.mp4: no frames left after skipping 1000 of 48"):
        server.wait(failing, timeout=120)
    history = server.wait(server.submit(prompt()), timeout=120)
    video = probe(server.download(history["outputs"]["2"]["images"][0], tmp_path))
    assert video.frames.shape == (4, 64, 64, 3)
