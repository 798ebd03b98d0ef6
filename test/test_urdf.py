"""The shipped URDF agrees with the SDK's kinematics and the joint_states names."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np

from support import ROOT
from tidybot_exec.ros.params import BY_NAME
from tidybot_sdk import kinematics as kin

URDF = ET.parse(ROOT / "urdf" / "tidybot.urdf").getroot()


def transform(xyz: str, rpy: str) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = kin.rpy_to_matrix(*map(float, rpy.split()))
    T[:3, 3] = list(map(float, xyz.split()))
    return T


def chain(child: str, q: dict[str, float]) -> np.ndarray:
    """Pose of ``child`` in panda_link0, walking the URDF joints."""
    joints = {j.find("child").get("link"): j for j in URDF.findall("joint")}
    T = np.eye(4)
    while child != "panda_link0":
        j = joints[child]
        o = j.find("origin")
        step = transform(o.get("xyz"), o.get("rpy"))
        if j.get("type") == "revolute":
            angle = q.get(j.get("name"), 0.0)
            step = step @ transform("0 0 0", f"0 0 {angle}")
        T = step @ T
        child = j.find("parent").get("link")
    return T


def test_urdf_forward_kinematics_matches_the_sdk():
    rng = np.random.default_rng(3)
    for _ in range(20):
        q = rng.uniform(kin.Q_MIN, kin.Q_MAX)
        urdf = chain("panda_hand_tcp", {f"panda_joint{i + 1}": v for i, v in enumerate(q)})
        assert np.allclose(urdf, kin.fk(q), atol=1e-6)


def test_joint_names_and_limits_match():
    prefix = BY_NAME["arm_joint_prefix"].default
    joints = {j.get("name"): j for j in URDF.findall("joint")}
    for i in range(7):
        limit = joints[f"{prefix}{i + 1}"].find("limit")
        assert math.isclose(float(limit.get("lower")), kin.Q_MIN[i])
        assert math.isclose(float(limit.get("upper")), kin.Q_MAX[i])
        assert math.isclose(float(limit.get("velocity")), kin.DQ_MAX[i])
    finger = joints[BY_NAME["gripper_joint_name"].default].find("limit")
    assert float(finger.get("upper")) == 0.8
    frames = {link.get("name") for link in URDF.findall("link")}
    assert {BY_NAME["arm_base_frame"].default, BY_NAME["base_frame"].default} <= frames
