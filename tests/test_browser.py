"""The shipped workflows in the real ComfyUI frontend, in a real browser.

Headless Chromium from Debian (/usr/bin/chromium, never a downloaded browser) driven by Playwright opens
the frontend the test server serves (pip package comfyui-frontend-package), loads every
workflows/<name>.json with `app.loadGraphData` (what the template browser and drag-and-drop call) and
checks that
- the frontend knows every node type: no missing-nodes dialog, no dialog or toast at all, no error;
- every node of this pack renders with exactly the widgets its /object_info definition gives it, holding
  the workflow's values;
- the graph serializes back to the file's slots, links and widget values (the generator writes the
  frontend's own format), and `app.graphToPrompt()` gives exactly workflows/api/<name>.json (the form
  the `edit` command and the server tests run): the two forms cannot drift apart in the real frontend;
- the template browser lists the workflows under the pack's folder name, with their thumbnails.

Screenshots: test-artifacts/browser/<name>.png (the whole graph) and template_browser.png.
`DIFFFERV_WRITE_THUMBNAILS=1` also rewrites the template thumbnails workflows/<name>.jpg from the real
frontend (the frontend asks /api/workflow_templates/<pack folder>/<name>.jpg for a custom node's
template: mediaSubtype "jpg" in comfyui-frontend-package 1.32.9's template store).
"""

import io
import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from comfy_harness import ComfyServer
from conftest import ROOT
from workflow_graphs import CHECKPOINT, EDIT_UNET, GRAPHS, IDENTITY_UNET, SPECIALIZED_UNET, widget_names

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; never a downloaded browser
# Headless, and no connection of Chromium's own to the outside (this machine's network is closed).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
ARTIFACTS = ROOT / "test-artifacts" / "browser"
PACK_FOLDER = "comfyui-diffferv"  # the folder ComfyServer links the pack in as (custom_nodes/<folder>)
THUMBNAIL_WIDTH, THUMBNAIL_MAX_BYTES = 800, 150_000
# The browser's first start: no template browser (a new user gets it), no minimap, no FPS counter, and
# full detail at every zoom (screenshots of a whole graph are zoomed out).
SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
}
NO_BANNER = "localStorage.setItem('vueNodesBannerDismissed', 'true')"
# The frontend's panels and floating buttons, hidden for screenshots of the graph alone.
HIDE_CHROME = (
    ".splitter-overlay-root, .splitter-overlay-root *, .p-buttongroup * { visibility: hidden !important; }"
)

LOAD = """async ({graph, name}) => {
    const app = window.app;
    const unknown = graph.nodes.map((n) => n.type).filter((t) => !(t in LiteGraph.registered_node_types));
    const reported = [];
    const show = app.showMissingNodesError;
    app.showMissingNodesError = function (missing, ...rest) {
        reported.push(...missing.map((m) => (typeof m === "string" ? m : m.type)));
        return show.call(this, missing, ...rest);
    };
    try {
        await app.loadGraphData(graph, true, true, name);
    } finally {
        app.showMissingNodesError = show;
    }
    await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
    // node ids: numbers in the file; the frontend of ComfyUI 0.33 (1.49) keeps them as strings
    const nodes = app.graph.nodes.map((n) => ({
        id: Number(n.id),
        type: n.type,
        size: [...n.size],
        collapsed: !!n.flags?.collapsed,
        widgets: (n.widgets ?? []).map((w) => ({name: w.name, type: w.type, value: w.value, hidden: !!w.hidden})),
    }));
    const prompt = await app.graphToPrompt();
    const texts = (selector) => [...document.querySelectorAll(selector)].map((e) => e.innerText);
    return {
        unknown, reported, nodes, serialized: app.graph.serialize(), prompt: prompt.output,
        dialogs: texts(".p-dialog"), toasts: texts(".p-toast-message"),
    };
}"""

DISPLAY_WIDGETS = {"DiffFERV_EditReport": ["report_text"]}
"""Widgets the pack's web extension adds after a node's own (display only: neither saved nor sent)."""
FRONTEND_PREVIEWS = {"video-preview"}
"""Display widgets newer frontends (1.49) add to a node with a video upload once its file is there."""

# The DiffFERV core of a workflow, what its template thumbnail shows (large enough to recognise on a card).
THUMBNAIL_NODES = [
    "DiffFERV_LoadVideo",
    "DiffFERV_ComputeFlowTrajectories",
    "DiffFERV_ApplyTemporalAttention",
    "DiffFERV_ContextWindows",
    "DiffFERV_FaceMask",
    "DiffFERV_DDIMInvertWithCache",
    "DiffFERV_PreservationInjectSampler",
]

FIT = """(types) => {
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    const nodes = window.app.graph.nodes.filter((n) => !types || types.includes(n.type));
    const boxes = nodes.map((n) => [n.pos[0], n.pos[1] - title, n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
    const [x0, y0] = [0, 1].map((i) => Math.min(...boxes.map((b) => b[i])));
    const [x1, y1] = [2, 3].map((i) => Math.max(...boxes.map((b) => b[i])));
    window.app.canvas.ds.fitToBounds([x0, y0, x1 - x0, y1 - y0], {zoom: 0.92});
    window.app.canvas.setDirty(true, true);
}"""


# A template card in the template browser: its title is the workflow's name; its image is loaded.
DIALOG = ".p-dialog, [role=dialog]"
"""The template browser's dialog: a PrimeVue dialog up to frontend 1.3x, a plain role=dialog one in 1.49."""
CARD_IMAGE_LOADED = """(name) => {
    const dialog = document.querySelector(".p-dialog, [role=dialog]");
    const title = [...dialog.querySelectorAll("*")].find((e) => !e.children.length && e.textContent.trim() === name);
    for (let card = title; card && card !== dialog; card = card.parentElement) {
        const image = card.querySelector("img");
        if (image) return image.complete && image.naturalWidth > 0;
    }
    return false;
}"""


def thumbnail_of(workflow: Path) -> Path:
    return workflow.with_suffix(".jpg")


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_clip):
    """The test server with the files the shipped workflows name: the demo clips in input/, and empty
    stand-ins for the checkpoint and the specialized UNet (so the model combos keep the shipped values
    and the frontend's missing-model check finds them; nothing loads them here)."""
    workdir = tmp_path_factory.mktemp("browser_server")
    models = workdir / "models"
    for folder, names in (
        ("checkpoints", [CHECKPOINT]),
        ("unet", [SPECIALIZED_UNET, IDENTITY_UNET, EDIT_UNET]),
    ):
        (models / folder).mkdir(parents=True)
        for name in names:
            (models / folder / name).touch()
    instance = ComfyServer(workdir, models)
    for clip in demo_clip.parent.glob("*.mp4"):
        shutil.copy(clip, workdir / "input" / clip.name)
    (workdir / "user" / "default").mkdir(parents=True)
    (workdir / "user" / "default" / "comfy.settings.json").write_text(json.dumps(SETTINGS))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def object_info(server):
    return requests.get(server.url + "/object_info", timeout=60).json()


class Browser:
    """One page of the frontend; records console errors and failed requests to the test server."""

    def __init__(self, page, url: str):
        self.page, self.url = page, url
        self.errors: list[str] = []
        self.served: set[str] = set()  # paths the test server answered
        page.on("console", self._console)
        page.on("requestfailed", lambda r: self._failed(r.url, r.failure))
        page.on("response", self._response)

    def _console(self, message) -> None:
        # a refused request to the outside (the closed network) is no error of the page
        if message.type == "error" and message.location.get("url", "").startswith(self.url):
            self.errors.append(message.text)

    def _response(self, response) -> None:
        if response.ok:
            self.served.add(urlsplit(response.url).path)
        else:
            self._failed(response.url, response.status)

    def _failed(self, url: str, why) -> None:
        # ERR_ABORTED: the page cancelled the request itself (e.g. media of a template card it left)
        if url.startswith(self.url) and why != "net::ERR_ABORTED":
            self.errors.append(f"{url}: {why}")

    def screenshot(self, path: Path, node_types: list[str] | None = None) -> bytes:
        """The graph alone (panels hidden), fitted to the window: all nodes, or those of `node_types`."""
        style = self.page.add_style_tag(content=HIDE_CHROME)
        self.page.evaluate(FIT, node_types)
        self.page.wait_for_timeout(300)  # DOM widgets follow the canvas on the next frames
        image = self.page.screenshot(path=path)
        style.evaluate("(element) => element.remove()")
        return image


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: the browser test drives Debian's; install it with "
            "`apt-get install -y chromium` (tests/setup_env.sh does when it runs as root)"
        )
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")),  # a fresh profile
            executable_path=str(CHROMIUM),
            args=CHROMIUM_FLAGS,
            viewport=VIEWPORT,
        )
        # the page talks to the test server only
        context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server.url) else r.abort())
        context.add_init_script(NO_BANNER)
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(60_000)
        page.goto(server.url)
        page.wait_for_function(
            "!!(window.app?.graph && window.app.canvas && LiteGraph.registered_node_types.PreviewImage)"
        )
        yield Browser(page, server.url)
        context.unroute_all(behavior="ignoreErrors")
        context.close()


def slot_fields(slot: dict, keys: tuple[str, ...]) -> dict:
    return {key: slot[key] for key in keys if slot.get(key) is not None}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_loads_in_the_frontend(browser, object_info, path):
    workflow = json.loads(path.read_text())
    browser.errors.clear()
    result = browser.page.evaluate(LOAD, {"graph": workflow, "name": path.stem})
    browser.screenshot(ARTIFACTS / f"{path.stem}.png")

    missing = sorted(set(result["unknown"] + result["reported"]))
    assert missing == [], f"node types the frontend does not know: {missing}"
    assert result["dialogs"] == [], f"the frontend opened a dialog: {result['dialogs']}"
    assert result["toasts"] == [], f"the frontend raised a toast: {result['toasts']}"
    assert browser.errors == [], f"errors while loading: {browser.errors}"

    # Every node of the pack renders, with the widgets of its definition holding the described values.
    described = {node.id: node for node in next(g for g in GRAPHS if g.name == path.stem).nodes}
    saved = {node["id"]: node for node in workflow["nodes"]}
    loaded = {node["id"]: node for node in result["nodes"]}
    assert sorted(loaded) == sorted(saved)
    ours = [node for node in result["nodes"] if node["type"].startswith("DiffFERV_")]
    assert {node["type"] for node in ours} >= {"DiffFERV_LoadVideo", "DiffFERV_PreservationInjectSampler"}
    for node in ours:
        where = f"{path.name} node {node['id']} ({node['type']})"
        display = DISPLAY_WIDGETS.get(node["type"], [])
        names = [w["name"] for w in node["widgets"] if w["name"] not in FRONTEND_PREVIEWS]
        assert names[len(names) - len(display) :] == display, where
        widgets = [w for w in node["widgets"] if w["name"] not in {*display, *FRONTEND_PREVIEWS}]
        assert [w["name"] for w in widgets] == widget_names(object_info[node["type"]]), where
        assert not node["collapsed"] and not any(w["hidden"] for w in widgets), where
        shown = {w["name"]: w["value"] for w in widgets if w["type"] != "button"}
        assert shown == described[node["id"]].values, where

    # The frontend serializes the graph back to the file: same links, slots, widget values, modes, and no
    # node grown taller than the file says (its widgets fit; heights do not depend on fonts).
    serialized = result["serialized"]
    assert serialized["links"] == workflow["links"]
    for node in serialized["nodes"]:
        where, mine = f"{path.name} node {node['id']} ({node['type']})", saved[node["id"]]
        # the frontend lists a slot for every widget too; the file (like ComfyUI's own templates) only
        # those a link drives
        inputs = [s for s in node["inputs"] if "widget" not in s or s.get("link") is not None]
        keys = ("name", "type", "shape", "widget", "link")
        assert [slot_fields(s, keys) for s in inputs] == [slot_fields(s, keys) for s in mine["inputs"]], where
        keys = ("name", "type", "links")
        assert [slot_fields(s, keys) for s in node["outputs"]] == [
            slot_fields(s, keys) for s in mine["outputs"]
        ], where
        # a node without widgets: [] in the file, left out by newer frontends (1.49)
        assert node.get("widgets_values", []) == mine["widgets_values"], where
        assert node["mode"] == mine["mode"], where
        assert node["size"][1] == mine["size"][1], f"{where}: the frontend needs height {node['size'][1]}"

    # The frontend's API form is the shipped one (bypassed LoadSpecializedUNet passed through).
    # (newer frontends also send their video preview widget's empty value, which ComfyUI ignores)
    prompt = {
        node_id: {**node, "inputs": {k: v for k, v in node["inputs"].items() if k not in FRONTEND_PREVIEWS}}
        for node_id, node in result["prompt"].items()
    }
    assert prompt == json.loads((path.parent / "api" / path.name).read_text())

    if os.environ.get("DIFFFERV_WRITE_THUMBNAILS") == "1":
        write_thumbnail(browser, thumbnail_of(path))


SHOW_REPORT = """async ({graph, text}) => {
    await window.app.loadGraphData(graph, true, true, "report");
    const node = window.app.graph.nodes.find((n) => n.type === "DiffFERV_EditReport");
    const box = () => node.widgets.find((w) => w.name === "report_text");
    const before = box().value;
    node.onExecuted({text: [text], images: []});  // what the frontend does with the node's UI output
    await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
    const area = box().element;
    return {
        before, after: box().value, shown: area.value, readOnly: area.readOnly,
        saved: window.app.graph.serialize().nodes.find((n) => String(n.id) === String(node.id)).widgets_values,
        sent: (await window.app.graphToPrompt()).output[String(node.id)].inputs,
    };
}"""


def test_edit_report_shows_its_text_on_the_node(browser):
    """The pack's web extension puts the text the node sends (its UI output's `text`) in a read-only box,
    which is neither saved with the workflow nor sent with the prompt."""
    path = ROOT / "workflows" / "diffferv_reconstruction_check.json"
    text = "Edit report: 16 frames, 512x512 (2.0 s)\nPSNR 31.10 dB   SSIM 0.9034"
    browser.errors.clear()
    result = browser.page.evaluate(SHOW_REPORT, {"graph": json.loads(path.read_text()), "text": text})
    assert result["before"] == "" and result["after"] == text and result["shown"] == text
    assert result["readOnly"] is True
    assert result["saved"] == [True]  # only the node's own widget (identity)
    assert "report_text" not in result["sent"] and result["sent"]["identity"] is True
    assert browser.errors == []


def write_thumbnail(browser: Browser, target: Path) -> None:
    """THUMBNAIL_NODES fitted to the window, scaled to THUMBNAIL_WIDTH, as JPEG."""
    from PIL import Image

    shot = browser.screenshot(ARTIFACTS / f"{target.stem}_thumbnail.png", THUMBNAIL_NODES)
    image = Image.open(io.BytesIO(shot))
    height = round(image.height * THUMBNAIL_WIDTH / image.width)
    image.convert("RGB").resize((THUMBNAIL_WIDTH, height), Image.LANCZOS).save(
        target, quality=82, optimize=True
    )


def test_template_browser_lists_the_workflows_with_thumbnails(browser, server):
    listed = requests.get(server.url + "/workflow_templates", timeout=30).json()
    assert sorted(listed.get(PACK_FOLDER, [])) == [p.stem for p in WORKFLOWS]
    for path in WORKFLOWS:
        thumbnail = thumbnail_of(path)
        assert thumbnail.is_file(), f"{thumbnail} is missing: run this test with DIFFFERV_WRITE_THUMBNAILS=1"
        assert thumbnail.stat().st_size < THUMBNAIL_MAX_BYTES, (
            f"{thumbnail} is over {THUMBNAIL_MAX_BYTES} bytes"
        )

    browser.errors.clear()
    page = browser.page
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.locator(DIALOG).first.get_by_text(PACK_FOLDER, exact=True).click()
    for path in WORKFLOWS:
        # the card's image has loaded and the test server answered the request for the pack's thumbnail
        # (the frontend may show it from a blob: address, and the response event of its request may reach
        # the test after the image has drawn: events are taken while the page waits)
        page.wait_for_function(CARD_IMAGE_LOADED, arg=path.stem)
        thumbnail = f"/api/workflow_templates/{PACK_FOLDER}/{path.stem}.jpg"
        for _ in range(100):
            if thumbnail in browser.served:
                break
            page.wait_for_timeout(100)
        assert thumbnail in browser.served, (thumbnail, sorted(browser.served))
    page.screenshot(path=ARTIFACTS / "template_browser.png")
    page.keyboard.press("Escape")
    assert browser.errors == []
