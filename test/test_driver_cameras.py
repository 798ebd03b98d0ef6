"""A ROS camera driver's topics as the node's camera source (cameras:=ros:NAME=NAMESPACE):
code gets the driver's pixels, depth and intrinsics, and the node subscribes to the driver
only while something wants its frames."""
from __future__ import annotations

import base64
import json

import numpy as np
from sensor_msgs.msg import CameraInfo, Image
from tidybot_interfaces.action import ExecuteCode

from support import LEASE_FREE, wait_until

STACK_PARAMS = LEASE_FREE         # cameras: ros:wrist=/fake_driver/camera
R = ExecuteCode.Result
W, H = 64, 48


def test_code_reads_a_drivers_topics_subscribed_only_while_wanted(stack, ros):
    _, client = stack
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mm = rng.integers(0, 3000, (H, W), dtype=np.uint16)
    node, ns = ros.node, "/fake_driver/camera"
    color = node.create_publisher(Image, f"{ns}/color/image_raw", 5)
    depth = node.create_publisher(Image, f"{ns}/aligned_depth_to_color/image_raw", 5)
    info = node.create_publisher(CameraInfo, f"{ns}/color/camera_info", 5)

    def publish() -> None:
        stamp = node.get_clock().now().to_msg()
        color.publish(Image(height=H, width=W, encoding="bgr8", step=3 * W,
                            data=rgb[..., ::-1].tobytes(), header=_header(stamp)))
        depth.publish(Image(height=H, width=W, encoding="16UC1", step=2 * W, data=mm.tobytes(),
                            header=_header(stamp)))
        info.publish(CameraInfo(height=H, width=W, k=[50.0, 0.0, 31.5, 0.0, 51.0, 23.5, 0.0, 0.0, 1.0],
                                d=[0.1, 0.0, 0.0, 0.0, 0.0], header=_header(stamp)))
    timer = node.create_timer(0.05, publish)
    try:
        assert color.get_subscription_count() == 0        # nothing wants the frames yet
        _, result = client.run(       # the arrays as bytes: well within max_output_bytes
            "import base64, json\nfrom tidybot_sdk import sensors\nimg = sensors.get_image('wrist')\n"
            "d = sensors.get_depth('wrist')\ni = sensors.get_camera_info('wrist')\n"
            "raw = lambda a: [a.dtype.str, a.shape, base64.b64encode(a.tobytes()).decode()]\n"
            "print(json.dumps({'img': raw(img), 'd': raw(d), 'cams': sensors.list_cameras(),"
            " 'k': [i['fx'], i['fy'], i['cx'], i['cy']], 'T': i['T_base_camera'] is not None}))\n",
            timeout=60)
        assert result.status == R.STATUS_SUCCEEDED, result.stderr + result.error
        seen = json.loads(result.stdout)
        assert seen["cams"] == ["wrist"] and seen["T"]
        img = array(seen["img"])
        assert img.dtype == np.uint8 and np.array_equal(img, rgb)     # bgr8 -> RGB
        d = array(seen["d"]).astype(float)
        assert np.allclose(d[mm > 0], mm[mm > 0] / 1000.0, atol=1e-6) and np.isnan(d[mm == 0]).all()
        assert seen["k"] == [50.0, 51.0, 31.5, 23.5]
        assert color.get_subscription_count() == 1
        wait_until(lambda: color.get_subscription_count() == 0, 20,
                   "the node to unsubscribe from the driver once nothing wants its frames")
    finally:
        node.destroy_timer(timer)
        for pub in (color, depth, info):
            node.destroy_publisher(pub)


def array(raw: list) -> np.ndarray:
    """An array the code printed as [dtype, shape, base64 of its bytes]."""
    dtype, shape, data = raw
    return np.frombuffer(base64.b64decode(data), dtype=dtype).reshape(shape)


def _header(stamp):
    from std_msgs.msg import Header
    return Header(stamp=stamp, frame_id="fake_color_optical_frame")
