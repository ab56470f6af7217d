"""What a setting of the pack is, declared once: its default, its range or choices, the step of its
widget, and the advice on picking a value (`Number`, `Choice`), with the sentence that refuses a value
outside it. The settings themselves are declared in the package of their concept (editing.inputs,
masks.inputs, windows.schedule, keyframes.selection, flow.consistency) and read from there by the
nodes' schemas and checks, the `edit` command's flags, their --help and checks, and the workflow
generator (tests/workflow_graphs.py); tests/test_settings.py fails when a node and a flag disagree.

Imports nothing of the pack: every package may import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def number_text(value: float) -> str:
    """A number as a person writes it: 0.9, 5, 1000000 (no trailing .0, no exponent)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class Number:
    """An int or float setting: `default`, the closed range `low` .. `high` (`math.inf`: no upper end),
    the widget's `step` (None: ComfyUI's), `advice` (which value for what, a clause; "" when the range
    says it all), and `off`: a value below the range that the setting itself takes to mean "not used"
    (Load Video's max_frames 0: no cap), accepted by its widget and its checks."""

    default: int | float
    low: int | float
    high: int | float
    step: int | float | None = None
    advice: str = ""
    off: int | float | None = None

    @property
    def range(self) -> str:
        if self.high == math.inf:
            return f"{number_text(self.low)} or more"
        return f"{number_text(self.low)} to {number_text(self.high)}"

    def problem(self, name: str, value: int | float, off: int | None = None) -> str | None:
        """Why `value` cannot be used for the setting called `name` (None when it can): one sentence with
        the range and the advice. `off`: a value outside the range that is accepted too (a command's
        "not used"; the declaration's own `off` when None)."""
        off = self.off if off is None else off
        if self.low <= value <= self.high or (off is not None and value == off):
            return None
        advice = f" ({self.advice})" if self.advice else ""
        also = f"{number_text(off)} or " if off is not None else ""
        values = f"a value of {self.range}" if self.high == math.inf else f"a value from {self.range}"
        return f"{name} is {number_text(value)}; use {also}{values}{advice}"

    def widget(self) -> dict:
        """The keyword arguments of a ComfyUI io.Int/io.Float input: default, min (the `off` value where
        there is one), max (and step)."""
        step = {} if self.step is None else {"step": self.step}
        low = self.low if self.off is None else min(self.off, self.low)
        return {"default": self.default, "min": low, "max": self.high, **step}

    def tooltip(self, text: str) -> str:
        """A node input's tooltip: `text` (what the setting does) and the advice."""
        return f"{text} {self.advice[0].upper()}{self.advice[1:]}." if self.advice else text

    def help(self, text: str, default: int | float | None = None, off: int | float | None = None) -> str:
        """A command-line flag's --help: the range (after the value meaning "not used": `off`, else the
        declaration's), `text`, the advice, and the default (the declaration's unless given)."""
        off = self.off if off is None else off
        also = f"{number_text(off)} or " if off is not None else ""
        advice = f"; {self.advice}" if self.advice else ""
        default = self.default if default is None else default
        return f"{also}{self.range}: {text}{advice} (default: {number_text(default)})"


@dataclass(frozen=True)
class Choice:
    """A setting picked from `options` (strings), `default` among them, with `advice` as for Number."""

    default: str
    options: tuple[str, ...]
    advice: str = ""

    def __post_init__(self):
        if self.default not in self.options:
            raise ValueError(f"default {self.default!r} is not one of {self.options}")

    def problem(self, name: str, value: str) -> str | None:
        if value in self.options:
            return None
        return f"{name} is {value!r}; choose one of: {', '.join(self.options)}"

    def widget(self) -> dict:
        """The keyword arguments of a ComfyUI io.Combo input: options, default."""
        return {"options": list(self.options), "default": self.default}

    def tooltip(self, text: str) -> str:
        return f"{text} {self.advice[0].upper()}{self.advice[1:]}." if self.advice else text

    def help(self, text: str, default: str | None = None) -> str:
        """A command-line flag's --help (argparse lists the options): `text`, the advice, the default."""
        advice = f"; {self.advice}" if self.advice else ""
        return f"{text}{advice} (default: {self.default if default is None else default})"
