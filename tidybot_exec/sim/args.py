"""Command-line value types shared by ``tidybot-sim`` and ``tidybot-base-bridge`` (both take
``--base-ports CMD,STATE`` the same way)."""
from __future__ import annotations

import argparse
from typing import Callable


def floats_arg(n: int) -> Callable[[str], list[float]]:
    """An argparse type: exactly n numbers, separated by commas or spaces."""
    def parse(text: str) -> list[float]:
        values = [float(v) for v in text.replace(",", " ").split()]
        if len(values) != n:
            raise argparse.ArgumentTypeError(f"expected {n} numbers, got {len(values)}")
        return values
    return parse


def ints_arg(n: int) -> Callable[[str], tuple[int, ...]]:
    """An argparse type: exactly n integers ("5590,5591")."""
    def parse(text: str) -> tuple[int, ...]:
        return tuple(int(v) for v in floats_arg(n)(text))
    return parse
