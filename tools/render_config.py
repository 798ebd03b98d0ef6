#!/usr/bin/env python3
"""Print config/tidybot_exec.yaml from the parameter table (tidybot_exec/ros/params.py).

    ./tidybot run python tools/render_config.py > config/tidybot_exec.yaml

test_params.py fails when the file and the table disagree.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tidybot_exec.ros.params import PARAMS  # noqa: E402

HEADER = """\
# Parameters of the tidybot_exec node. Every parameter is read-only while the node runs.
# Generated from tidybot_exec/ros/params.py by tools/render_config.py; edit the table, not this.
# Pass with: ros2 run tidybot_exec tidybot-exec --ros-args --params-file config/tidybot_exec.yaml
# or the launch argument params_file:=... ('/**' applies it whatever the node's name or namespace).
/**:
  ros__parameters:"""


def render() -> str:
    lines = [HEADER]
    for p in PARAMS:
        bounds = f" [{p.minimum:g}..{p.maximum:g}]" if p.minimum is not None else ""
        value = p.default
        text = (f'"{value}"' if isinstance(value, str) else str(value).lower()
                if isinstance(value, bool) else str(value))
        lines += [f"    # {p.description}{bounds}", f"    {p.name}: {text}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
