"""The parameter table, the shipped YAML and the node's validation agree."""
from __future__ import annotations

import sys

import yaml

from support import ROOT
from tidybot_exec.ros.params import BY_NAME, PARAMS, validate


def shipped() -> dict:
    return yaml.safe_load((ROOT / "config" / "tidybot_exec.yaml").read_text())["/**"]["ros__parameters"]


def test_yaml_lists_every_parameter_with_its_default():
    assert shipped() == {p.name: p.default for p in PARAMS}


def test_yaml_is_rendered_from_the_table():
    sys.path.insert(0, str(ROOT / "tools"))
    from render_config import render

    assert (ROOT / "config" / "tidybot_exec.yaml").read_text() == render(), (
        "config/tidybot_exec.yaml is stale: ./tidybot run python tools/render_config.py "
        "> config/tidybot_exec.yaml")


def test_defaults_are_valid():
    assert validate({p.name: p.default for p in PARAMS}) == []


def test_out_of_range_wrong_type_and_clashing_ports_are_refused():
    values = {p.name: p.default for p in PARAMS}
    assert validate({**values, "arm_cmd_port": 0}) == ["arm_cmd_port = 0 is below its minimum 1"]
    assert validate({**values, "arm_host": " "}) == ["arm_host must not be empty"]
    assert "must be int" in BY_NAME["arm_cmd_port"].check(1.5)
    assert validate({**values, "base_cmd_port": values["base_state_port"]}) == [
        "base_state_port and base_cmd_port both use 127.0.0.1:5591"]
    # the same port on different hosts is fine
    assert validate({**values, "base_host": "10.0.0.9", "base_cmd_port": 5555}) == []


def test_a_namespaced_node_gets_its_own_history_and_frame_prefix():
    from pathlib import Path

    from tidybot_exec.ros.params import frame_prefix, robot_history_dir
    assert robot_history_dir("/h", "/") == Path("/h")
    assert robot_history_dir("/h", "/robot1") == Path("/h/robot1")
    assert robot_history_dir("~/x", "/lab/robot2") == Path("~/x").expanduser() / "lab" / "robot2"
    assert frame_prefix("auto", "/") == "" and frame_prefix("auto", "/robot1") == "robot1/"
    assert frame_prefix("", "/robot1") == "" and frame_prefix("r1_", "/robot1") == "r1_"
