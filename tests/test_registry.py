"""The Comfy Registry's checks of the pack, passed before anyone publishes it.

1. comfy-cli's own `comfy node validate` (comfy-cli 1.23.0, pinned in tests/requirements.txt), run for
   real in the repository root: what `comfy node publish` runs before it uploads. Its checks
   (comfy_cli/registry/config_parser.py `extract_node_configuration`, comfy_cli/command/custom_nodes/
   command.py `validate_node_for_publishing`): pyproject.toml parses and has a project version (else
   exit 1); classifiers "Operating System :: ..." / "Environment :: ..." from its lists, the version
   specifiers of `requires-comfyui` and of a comfyui-frontend-package dependency, and the license form
   {file = ...} / {text = ...} (each a printed "Warning: ..."); `ruff check --select S102,S307,E702`
   (exec, eval, two statements on one line: printed as "Security warnings found"). It exits 0 on
   warnings, so the test reads its output.
2. What comfy-cli leaves to the registry server, from the registry's specification
   (docs.comfy.org/registry/specifications) and its publish request (comfy_cli/registry/api.py
   `publish_node_version`): the node id `[project] name`, a three-number version, the Repository URL,
   PublisherId, DisplayName, the license file, an Icon this repository serves, and a `requires-comfyui`
   that the ComfyUI the tests run on satisfies.
3. The registry's security standard against installing packages at run time
   (docs.comfy.org/registry/standards: no subprocess calls of pip).
"""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import tomlkit
from comfyui_diffferv.comfyhost.host import find_comfyui
from conftest import ROOT
from packaging.specifiers import SpecifierSet
from packaging.version import Version

PYPROJECT = tomlkit.parse((ROOT / "pyproject.toml").read_text()).unwrap()
PROJECT, COMFY = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]


def comfy_node_validate(folder: Path, home: Path) -> subprocess.CompletedProcess:
    """`comfy node validate` in `folder`, offline and unattended: its config in a scratch home, no
    telemetry, no terminal to prompt on."""
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "DO_NOT_TRACK": "1"}
    return subprocess.run(
        [sys.executable, "-m", "comfy_cli", "node", "validate"],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def complaints(result: subprocess.CompletedProcess) -> list[str]:
    """What comfy-cli flagged: its warnings, its security findings, its errors (plain text goes to
    stdout, its rich-formatted messages to stderr)."""
    output = result.stdout + result.stderr
    flagged = [line for line in output.splitlines() if re.match(r"\s*(Warning|Error)\b", line)]
    if "Security warnings found" in output:
        flagged.append(output[output.index("Security warnings found") :])
    return flagged


def test_comfy_cli_node_validate_passes(tmp_path):
    result = comfy_node_validate(ROOT, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints(result) == []
    assert "All validation checks passed" in result.stderr, result.stdout + result.stderr


def test_comfy_cli_node_validate_flags_a_bad_pack(tmp_path):
    """The same run on a pack with one of each problem: the checks above can fail."""
    pack = tmp_path / "bad_pack"
    pack.mkdir()
    (pack / "pyproject.toml").write_text(
        '[project]\nname = "bad"\nversion = "1.0.0"\nlicense = { url = "https://example.org" }\n'
        'classifiers = ["Operating System :: Windows"]\n[tool.comfy]\nrequires-comfyui = "0.3"\n'
    )
    (pack / "nodes.py").write_text("def run(text):\n    return eval(text)\n")
    flagged = "\n".join(complaints(comfy_node_validate(pack, tmp_path)))
    assert "Warning: Invalid Operating System classifier" in flagged
    assert "Warning: Invalid requires-comfyui format" in flagged
    assert "Warning: License should be in one of these two formats" in flagged
    assert "S307" in flagged  # eval
    (pack / "pyproject.toml").write_text('[project]\nname = "bad"\n')
    assert comfy_node_validate(pack, tmp_path).returncode == 1  # no version


def test_node_id_follows_the_registry_specification():
    """Under 100 characters of letters, digits, '-', '_', '.'; starts with a letter and ends with a letter
    or digit (PEP 508); no two special characters in a row."""
    name = PROJECT["name"]
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*[A-Za-z0-9]", name), name
    assert not re.search(r"[._-]{2}", name), name


def test_version_has_three_numbers():
    assert re.fullmatch(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)", PROJECT["version"]), PROJECT["version"]


def test_publisher_display_name_repository_and_license():
    assert COMFY.get("PublisherId") and COMFY.get("DisplayName")
    repository = urlsplit(PROJECT["urls"]["Repository"])
    assert repository.scheme == "https" and repository.netloc and repository.path.strip("/"), repository
    license_file = ROOT / PROJECT["license"]["file"]
    assert license_file.is_file() and license_file.read_text().strip(), f"{license_file} is missing or empty"


def test_icon_is_a_square_image_of_this_repository():
    """An Icon in this repository (raw.githubusercontent.com/<owner>/<repo>/<branch>/<path> of the
    Repository URL) must be committed there: the registry shows what that URL serves."""
    from PIL import Image

    icon = urlsplit(COMFY["Icon"])
    assert icon.scheme == "https", COMFY["Icon"]
    owner_repo = urlsplit(PROJECT["urls"]["Repository"]).path.strip("/").removesuffix(".git")
    if icon.netloc != "raw.githubusercontent.com" or not icon.path.startswith(f"/{owner_repo}/"):
        pytest.skip(f"the Icon is served from outside this repository: {COMFY['Icon']}")
    branch_and_path = icon.path.removeprefix(f"/{owner_repo}/")
    path = ROOT / branch_and_path.split("/", 1)[1]
    assert path.is_file(), f"the Icon URL names {path.relative_to(ROOT)}, which is not in the repository"
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert tracked.returncode == 0, f"{path.relative_to(ROOT)} is not committed"
    with Image.open(path) as image:
        assert image.format in ("PNG", "JPEG", "GIF", "WEBP") and image.width == image.height, (
            image.format,
            image.size,
        )


def test_requires_comfyui_admits_the_comfyui_the_tests_run_on():
    text = (find_comfyui() / "comfyui_version.py").read_text()
    tested = Version(re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text).group(1))
    assert tested in SpecifierSet(COMFY["requires-comfyui"]), (tested, COMFY["requires-comfyui"])


def pip_runs(source: str) -> list[int]:
    """Lines of calls that run a process (subprocess.*, os.system, os.popen, os.exec*/spawn*) with a
    literal argument naming pip."""
    runners = re.compile(r"(subprocess\.\w+|os\.(system|popen|exec\w*|spawn\w*))$")
    found = []
    for call in ast.walk(ast.parse(source)):
        if isinstance(call, ast.Call) and runners.match(ast.unparse(call.func)):
            texts = [
                n.value for n in ast.walk(call) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            ]
            if any(re.search(r"\bpip3?\b", text) for text in texts):
                found.append(call.lineno)
    return found


def test_no_package_installs_at_run_time():
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    offenders = {
        name: lines for name in files.stdout.split() if (lines := pip_runs((ROOT / name).read_text()))
    }
    assert offenders == {}
    # the scan finds what it looks for
    assert pip_runs(
        "import subprocess, sys\nsubprocess.check_call([sys.executable, '-m', 'pip', 'install', 'x'])"
    )
    assert pip_runs("import os\nos.system('pip install x')") == [2]
