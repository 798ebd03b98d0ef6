"""The cameras' pure parts: the static transforms, frame and parameter checks before any
decoding, and the arm's pose at a frame's timestamp."""
from __future__ import annotations

import numpy as np
import pytest


def test_the_static_transforms_are_the_mounts_the_simulator_renders_from():
    """What /tf_static carries (where tf2_msgs exists) is each camera's mount."""
    from builtin_interfaces.msg import Time

    from tidybot_exec.cameras.robot_model import MOUNTS
    from tidybot_exec.ros.camera_topics import mount_tf
    from tidybot_sdk import kinematics as kin

    for name, mount in MOUNTS.items():
        tf = mount_tf("robot2/", name, Time())
        assert tf.header.frame_id == f"robot2/{mount.link}"
        assert tf.child_frame_id == f"robot2/{name}_color_optical_frame"
        t, r = tf.transform.translation, tf.transform.rotation
        assert np.allclose([t.x, t.y, t.z], mount.optical[:3, 3])
        w, x, y, z = r.w, r.x, r.y, r.z
        R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        assert np.allclose(R, mount.optical[:3, :3], atol=1e-9)
    # the base camera's optical z axis looks down at the table, the wrist's along the hand
    base = MOUNTS["base"].optical_in_arm_base(kin.HOME_Q)
    assert base[2, 2] < -0.5
    assert MOUNTS["wrist"].optical[2, 2] > 0.99


def test_frames_and_parameters_that_lie_are_refused_before_any_decoding():
    from tidybot_exec.cameras import protocol as cp
    from tidybot_exec.ros.params import validate

    image = cp.encode_jpeg(np.zeros((24, 32, 3), np.uint8))
    header = {"camera_id": "base", "stream": "color", "width": 32, "height": 24,
              "timestamp": 1.0, "format": "jpeg"}
    got, data = cp.unpack_frame(cp.pack_frame(header, image))
    assert cp.decode_color(data, (32, 24)).shape == (24, 32, 3)
    with pytest.raises(cp.FrameError, match="header says 640x480"):
        cp.decode_color(data, (640, 480))             # a small file claiming a big image
    for bad in ({"width": None}, {"width": 10 ** 6}, {"timestamp": "soon"}, {"stream": "ir"}):
        with pytest.raises(cp.FrameError):
            cp.unpack_frame(cp.pack_frame({**header, **bad}, image))
    with pytest.raises(cp.FrameError):
        cp.unpack_frame(b"\x00\x00\x10\x00{}")         # a header longer than the message
    for spec in ("ros:wrist=/cam era", "ros:1st=/cam", "ros:wrist=/a,wrist=/b", "ros:", "http://x"):
        assert any("cameras" in p for p in validate({"cameras": spec})), spec
    assert validate({"cameras": "ros:wrist=/wrist/camera,base=base_cam"}) == []


def test_a_frames_pose_is_where_the_arm_was_when_the_frame_was_taken():
    """The wrist camera's T_base_camera comes from the arm's state nearest the frame's
    timestamp, not the newest one (the arm moves while the frame travels)."""
    from tidybot_exec.cameras.source import ArmTrack

    track = ArmTrack()
    assert track.at(1000.0) is None
    for i in range(300):                         # 3 s of states at 100 Hz
        track.observe({"timestamp": 1000.0 + 0.01 * i, "q": [float(i)] * 7})
    assert track.at(1002.5)[0] == 250.0
    assert track.at(1002.504)[0] == 250.0 and track.at(1002.506)[0] == 251.0
    assert track.at(1000.5)[0] == 299.0          # older than kept (2 s): the newest, fresh
    assert track.at(5.0)[0] == 299.0             # clocks that disagree: the newest, fresh
    track.observe({"timestamp": 10.0, "q": [7.0] * 7})        # a restarted arm server
    assert track.at(10.0)[0] == 7.0


def test_a_frame_stamped_by_the_cameras_own_clock_is_stamped_on_arrival():
    """A RealSense server may send hardware time (ms since the device started): taken as
    epoch seconds it would stamp ROS images in 1970. An epoch stamp is kept as it is."""
    from tidybot_exec.cameras.source import epoch_stamp

    now = 1_765_000_000.0
    header = {"timestamp": now - 0.03}
    assert epoch_stamp(header, now) == now - 0.03 and "device_timestamp" not in header
    header = {"timestamp": 123456.789}                  # the device's clock
    assert epoch_stamp(header, now) == now and header["device_timestamp"] == 123456.789
    assert epoch_stamp({}, now) == now
