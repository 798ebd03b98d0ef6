"""Cameras on the real node and simulator processes: the topics, the SDK calls from
sandboxed code (also in a dry run, which sees its own copy of the world), a camera server
that dies and returns, no rendering without subscribers, and look_and_pick picking the cube."""
from __future__ import annotations

import io
import json
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from PIL import Image as PILImage
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from tidybot_interfaces.action import ExecuteCode

from conftest import renew
from support import ROOT, wait_until

STACK_CAMERAS = True
STACK_PARAMS = {"require_lease": False, "camera_rate_hz": 10.0, "camera_budget_mb": 1}
R = ExecuteCode.Result
OK, ERROR = 0, 2
INFO = ("import json\nfrom tidybot_sdk import sensors\n"
        "def info(cam):\n    i = sensors.get_camera_info(cam)\n"
        "    return {**i, 'T_base_camera': i['T_base_camera'].tolist()}\n")


def frames(stack) -> int:
    return stack.control(cmd="stats")["camera_frames"]


def quiet(stack, window_s: float = 1.5) -> bool:
    """No frame rendered over ``window_s`` (the source unsubscribes ~1.5 s after demand ends)."""
    before = frames(stack)
    time.sleep(window_s)
    return frames(stack) == before


def run_ok(client, code: str, **fields):
    _, result = client.run(code, timeout=90, **fields)
    assert result.status == R.STATUS_SUCCEEDED, result.stdout + result.stderr + result.error
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_nothing_is_rendered_until_someone_looks(stack, ros):
    sim_stack, client = stack
    renew(sim_stack, client, ros, node=True)      # as the stack starts, whatever ran before
    assert frames(sim_stack) == 0 and quiet(sim_stack)


def test_topics_carry_colour_depth_and_matching_camera_info(stack, record):
    sim_stack, _ = stack
    color = record(Image, "/cameras/base/color/image_raw", 5)
    compressed = record(CompressedImage, "/cameras/base/color/image_raw/compressed", 5)
    depth = record(Image, "/cameras/base/depth/image_raw", 5)
    info = record(CameraInfo, "/cameras/base/camera_info", 5)
    rgb, jpeg, d, k = (r.latest(20) for r in (color, compressed, depth, info))
    assert (rgb.encoding, rgb.step, len(rgb.data)) == ("rgb8", 3 * rgb.width, 3 * rgb.width * rgb.height)
    pixels = np.frombuffer(bytes(rgb.data), np.uint8).reshape(rgb.height, rgb.width, 3)
    assert pixels.std() > 20                                    # a scene, not a constant
    assert jpeg.format == "jpeg"
    assert PILImage.open(io.BytesIO(bytes(jpeg.data))).size == (rgb.width, rgb.height)
    assert (d.encoding, d.step, d.width, d.height) == ("16UC1", 2 * rgb.width, rgb.width, rgb.height)
    mm = np.frombuffer(bytes(d.data), np.uint16)
    assert 300 < np.median(mm) < 5000                           # the table and floor, in mm
    assert (k.width, k.height) == (rgb.width, rgb.height)
    fx, cx, fy, cy = k.k[0], k.k[2], k.k[4], k.k[5]
    assert fx > 0 and fy > 0 and abs(cx - rgb.width / 2) < 1 and abs(cy - rgb.height / 2) < 1
    assert rgb.header.frame_id == d.header.frame_id == k.header.frame_id == "base_color_optical_frame"
    for r in (color, compressed, depth, info):
        r.close()
    wait_until(lambda: quiet(sim_stack), 20, "rendering to stop without subscribers")


def test_sdk_reads_images_depth_and_info_and_the_wrist_view_follows_the_arm(stack):
    _, client = stack
    (first, second) = run_ok(client, INFO + (
        "import numpy as np\nfrom tidybot_sdk import arm\n"
        "def look():\n    img = sensors.get_image('wrist')\n"
        "    d = sensors.get_depth('wrist')\n"
        "    return {'cameras': sensors.list_cameras(), 'shape': img.shape, 'dtype': str(img.dtype),"
        " 'mean': img.reshape(-1, 3).mean(0).tolist(), 'dtype_d': str(d.dtype),"
        " 'd': float(np.nanmedian(d)), 'info': info('wrist'), 'img': img[::8, ::8].tolist()}\n"
        "print(json.dumps(look()), flush=True)\narm.move_delta(dz=-0.2)\n"
        "print(json.dumps(look()), flush=True)\narm.go_home()\n"))
    assert first["cameras"] == ["wrist", "base"]
    h, w = first["info"]["height"], first["info"]["width"]
    assert first["shape"] == [h, w, 3] and first["dtype"] == "uint8" and first["dtype_d"] == "float32"
    # looking down at the table from the home pose, then 20 cm closer to it
    assert 0.2 < second["d"] < first["d"] < 1.5
    assert np.abs(np.array(first["img"]) - np.array(second["img"])).mean() > 5
    T1, T2 = np.array(first["info"]["T_base_camera"]), np.array(second["info"]["T_base_camera"])
    assert np.allclose(T1[:3, 3] - T2[:3, 3], (0, 0, 0.2), atol=0.01)
    assert first["info"]["frame_id"] == "wrist_color_optical_frame"
    # the principal point also under RealSense's names (the simulator sends only those)
    assert (first["info"]["ppx"], first["info"]["ppy"]) == (first["info"]["cx"], first["info"]["cy"])


def test_an_unknown_camera_and_the_byte_budget_are_clear_errors(stack):
    _, client = stack
    _, result = client.run("from tidybot_sdk import sensors\nsensors.get_image('nose')\n")
    assert result.status == R.STATUS_FAILED
    assert "SensorError: unknown camera 'nose': this robot's cameras are wrist, base" in result.error
    # camera_budget_mb is 1 here: four 320x240 colour images (225 KiB each) fit, the fifth not
    _, result = client.run("from tidybot_sdk import sensors\nfor i in range(5):\n"
                           "    sensors.get_image('base')\n    print(i, flush=True)\n")
    assert result.status == R.STATUS_FAILED and result.stdout.split() == ["0", "1", "2", "3"]
    assert "camera budget of 1 MiB is used up" in result.error


def test_look_and_pick_picks_the_cube_and_a_dry_run_sees_its_own_world(stack):
    sim_stack, client = stack
    _, result = client.run((ROOT / "examples" / "look_and_pick.py").read_text(), timeout=120)
    assert result.status == R.STATUS_SUCCEEDED, result.stdout + result.stderr
    assert "still holding: True" in result.stdout
    assert sim_stack.control(cmd="stats")["held"] == "cube"
    # the dry run starts from this world: the cube in the hand, high above the table; what it
    # does to its own world (letting go) leaves the real one as it is
    (seen,) = run_ok(client, INFO + (
        "import numpy as np\nfrom tidybot_sdk import gripper\n"
        "rgb, d, i = sensors.get_image('base').astype(int), sensors.get_depth('base'), info('base')\n"
        "red = (rgb[..., 0] > 120) & (rgb[..., 0] > 2 * rgb[..., 1]) & np.isfinite(d)\n"
        "v, u = np.nonzero(red)\nz = d[v, u]\n"
        "p = np.array(i['T_base_camera']) @ np.stack([(u - i['cx']) * z / i['fx'],"
        " (v - i['cy']) * z / i['fy'], z, np.ones_like(z)])\n"
        "held = sensors.is_gripper_holding()\ngripper.open()\n"
        "print(json.dumps({'held': held, 'top': float(p[2].max()),"
        " 'after': sensors.is_gripper_holding()}))\n"), dry_run=True)
    assert seen["held"] and not seen["after"]
    assert seen["top"] > 0.2              # on the table its top is at 0.1 m
    assert sim_stack.control(cmd="stats")["held"] == "cube"
    run_ok(client, "from tidybot_sdk import arm, gripper\narm.move_delta(dz=-0.15)\n"
                   "gripper.open()\narm.go_home()\n")


def test_a_dead_camera_server_is_unavailable_in_code_and_diagnostics_then_recovers(stack, record):
    sim_stack, client = stack
    diag = record(DiagnosticArray, "/diagnostics")
    look = "from tidybot_sdk import sensors\nprint(sensors.get_image('base').shape)\n"
    run_ok(client, look)
    assert sim_stack.control(cmd="kill", server="cameras")["ok"]

    def camera_level(level):
        for msg in reversed(diag.messages):
            for s in msg.status:
                if s.name == "tidybot_exec: camera base":
                    return s if s.level[0] == level else None
        return None
    entry = wait_until(lambda: camera_level(ERROR), 10, "a camera ERROR in /diagnostics")
    assert "connection lost" in entry.message or "not reachable" in entry.message
    # the last frame may still be fresh for camera_max_age_s: then never a stale one
    result = wait_until(lambda: (r := client.run(look)[1]).status == R.STATUS_FAILED and r, 20,
                        "code to see the camera unavailable")
    assert "SensorUnavailable: camera 'base': no fresh color frame" in result.error
    assert "not reachable" in result.error
    assert sim_stack.control(cmd="restart", server="cameras")["ok"]
    wait_until(lambda: camera_level(OK), 15, "the camera back to OK in /diagnostics")
    run_ok(client, look)
