"""Tensor functions of the core packages document themselves in one format.

Every public function or method of attention/, flow/, editing/, windows/, masks/ and segments/ whose signature takes
or returns a tensor or an array (an annotation naming ``Tensor`` or ``ndarray``) has a docstring with, in
this order (kornia's style; docs/architecture.md shows an example):

    Args:
        name: what it is, for every parameter but self/cls.
    Returns:
        what comes back (left out when the function returns None).
    Shape:
        - name: (F, C, H, W), one line per tensor argument and the result, letters said once.

The check reads the source (ast), so it needs no import and runs in a blink.
"""

import ast
import re
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGES = ("attention", "flow", "editing", "windows", "masks", "segments")
TENSOR = re.compile(r"\b(Tensor|ndarray)\b")


def _annotation(node: ast.expr | None) -> str:
    return "" if node is None else ast.unparse(node)


def _parameters(fn: ast.FunctionDef) -> list[ast.arg]:
    a = fn.args
    every = a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]
    return [p for p in every if p.arg not in ("self", "cls")]


def _is_property(fn: ast.FunctionDef) -> bool:
    return any(_annotation(d).endswith(("property", "setter")) for d in fn.decorator_list)


def _public_functions(tree: ast.Module):
    """(qualified name, function) for module-level functions and methods of module-level classes whose
    names do not start with an underscore (``__call__`` counts as public)."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if not isinstance(item, ast.FunctionDef) or _is_property(item):
                    continue
                if item.name == "__call__" or not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item


def _tensor_functions():
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for name, fn in _public_functions(tree):
                annotations = [_annotation(p.annotation) for p in _parameters(fn)] + [_annotation(fn.returns)]
                if any(TENSOR.search(a) for a in annotations):
                    yield f"{package}/{path.name}::{name}", fn


def _section(doc: str, title: str) -> str | None:
    """The indented lines under ``title:`` (a line of its own), or None when the docstring has no such
    section."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f"{title}:":
            indent = len(line) - len(line.lstrip())
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                body.append(following)
            return "\n".join(body)
    return None


def problems_of(fn: ast.FunctionDef) -> list[str]:
    """What the docstring of one tensor function lacks, in words."""
    doc = ast.get_docstring(fn)
    if not doc:
        return ["no docstring"]
    found = []
    parameters = _parameters(fn)
    args = _section(doc, "Args")
    if parameters and args is None:
        found.append("no Args section")
    elif parameters:
        missing = [
            p.arg for p in parameters if not re.search(rf"^\s+\**{re.escape(p.arg)}\b[^:\n]*:", args, re.M)
        ]
        if missing:
            found.append(f"Args does not name {', '.join(missing)}")
    returns_none = fn.returns is None or _annotation(fn.returns) == "None"
    if not returns_none and _section(doc, "Returns") is None:
        found.append("no Returns section")
    shape = _section(doc, "Shape")
    if shape is None or not re.search(r"^\s+- ", shape, re.M):
        found.append("no Shape section with '- name: (...)' lines")
    order = [doc.find(f"\n{t}:") for t in ("Args", "Returns", "Shape") if f"\n{t}:" in doc]
    if order != sorted(order):
        found.append("sections not in the order Args, Returns, Shape")
    return found


TENSOR_FUNCTIONS = dict(_tensor_functions())


def test_the_check_finds_the_tensor_functions():
    assert len(TENSOR_FUNCTIONS) > 40, sorted(TENSOR_FUNCTIONS)


def test_the_check_catches_a_missing_section():
    source = '''
def warp(frames: "torch.Tensor", flow: "torch.Tensor") -> "torch.Tensor":
    """Warp frames.

    Args:
        frames: the frames.
    Shape:
        - frames: (F, C, H, W)
    """
'''
    fn = ast.parse(source).body[0]
    assert problems_of(fn) == ["Args does not name flow", "no Returns section"]


@pytest.mark.parametrize("name", sorted(TENSOR_FUNCTIONS))
def test_tensor_functions_say_args_returns_and_shape(name):
    assert problems_of(TENSOR_FUNCTIONS[name]) == [], name


def test_the_format_is_the_one_the_architecture_shows():
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert "Shape:" in text and "Args:" in text and "Returns:" in text
    assert Path(__file__).name in text
