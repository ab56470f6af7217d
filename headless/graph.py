"""An API-form workflow as a graph to edit, in the manner of ComfyUI's
`comfy_execution.graph_utils.GraphBuilder` but on a workflow that already exists: nodes found by class,
added under the next free id, taken out with their consumers relinked to what they consumed.

An API-form workflow (what ComfyUI's /prompt takes) is
`{node id: {"class_type": str, "inputs": {name: value or link}, "_meta": {"title": str}}}`, where a
link `[node id, output index]` connects an input to another node's output.
"""

from __future__ import annotations


def link(node_id: str, output: int = 0) -> list:
    """The value of an input connected to output `output` of node `node_id`."""
    return [node_id, output]


def is_link(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


class ApiGraph:
    """Edits `prompt` (an API-form workflow) in place."""

    def __init__(self, prompt: dict):
        self.prompt = prompt

    def ids(self, class_type: str) -> list[str]:
        """The ids of the nodes of `class_type`, in the workflow's order."""
        return [key for key, node in self.prompt.items() if node["class_type"] == class_type]

    def find(self, class_type: str) -> str | None:
        """The id of the workflow's one node of `class_type`, or None when it has none."""
        found = self.ids(class_type)
        if len(found) > 1:
            raise ValueError(f"the workflow must hold at most one {class_type} node, it holds {len(found)}")
        return found[0] if found else None

    def only(self, class_type: str) -> str:
        """The id of the workflow's one node of `class_type`; ValueError unless there is exactly one."""
        found = self.ids(class_type)
        if len(found) != 1:
            raise ValueError(f"the workflow must hold exactly one {class_type} node, it holds {len(found)}")
        return found[0]

    def inputs(self, class_type: str) -> dict:
        """The inputs of the workflow's one node of `class_type` (to read or update in place)."""
        return self.prompt[self.only(class_type)]["inputs"]

    def add(self, class_type: str, title: str, **inputs) -> str:
        """Add a node under the next free id (one more than the largest numeric id); returns its id."""
        node_id = str(max((int(key) for key in self.prompt), default=0) + 1)
        self.prompt[node_id] = {"class_type": class_type, "inputs": dict(inputs), "_meta": {"title": title}}
        return node_id

    def remove(self, node_id: str, replacement: list) -> None:
        """Take node `node_id` out and connect every input that read one of its outputs to `replacement`
        (a link; for a pass-through node, the link of its own input)."""
        del self.prompt[node_id]
        for node in self.prompt.values():
            for name, value in node["inputs"].items():
                if is_link(value) and str(value[0]) == node_id:
                    node["inputs"][name] = replacement

    def titles(self) -> dict[str, str]:
        """Node id -> the node's title (its class when it has none)."""
        return {
            key: node.get("_meta", {}).get("title", node["class_type"]) for key, node in self.prompt.items()
        }

    def class_types(self) -> dict[str, str]:
        """Node id -> class_type."""
        return {key: node["class_type"] for key, node in self.prompt.items()}
