"""Camera servers as the TidyBot's own behave (REAL-SERVERS.md §4, DESIGN §12.1): the node's
camera client against a stand-in that pushes its state on connect and echoes nothing (each
camera gets its own intrinsics, named ppx/ppy or cx/cy), and the simulator's camera server
in both request dialects, naming intrinsics as a RealSense server does. Real WebSockets,
no ROS."""
from __future__ import annotations

import json

import numpy as np
import pytest

from camera_push_standin import H, W, StandIn
from support import free_port

CAMERAS = {"sn-101": "front", "sn-202": "wrist", "sn-303": "side"}     # device id -> name
REALSENSE = {"fx", "fy", "ppx", "ppy", "width", "height", "depth_scale"}


@pytest.mark.parametrize("server", [
    dict(push_state=True),
    dict(push_state=True, typed=True, principal=("cx", "cy")),
    dict(push_state=False, c1_names=True, principal=("cx", "cy")),
], ids=["pushes-echoes-nothing-ppx", "pushes-typed-cx", "asked-c1-names-cx"])
def test_each_camera_gets_its_own_intrinsics_whatever_the_server_pushes_or_echoes(server):
    from tidybot_exec.cameras.source import CameraServerSource

    with StandIn(CAMERAS, **server) as standin:
        source = CameraServerSource(standin.address, rate_hz=20.0)
        try:
            assert source.wait_cameras(10.0) == list(CAMERAS.values())
            assert source.error == ""
            for i, name in enumerate(CAMERAS.values()):
                k = source.intrinsics(name)
                assert (k["fx"], k["cx"], k["cy"]) == (100.0 + 10 * i, W / 2 + i, H / 2 + i), name
                # a frame without intrinsics in its header carries its own camera's
                frame = source.frame(name, "color", max_age_s=5.0, wait_s=10.0)
                assert frame.header["intrinsics"]["fx"] == 100.0 + 10 * i
                assert frame.image.shape == (H, W, 3)
        finally:
            source.close()
    asked = [r for r in standin.requests if r.get("action") == "get_intrinsics"]
    assert [r["device_id"] for r in asked] == list(CAMERAS)
    # the real server's dialect is unknown: every request speaks both
    assert all(r["type"] == {"get_state": 1, "get_intrinsics": 7, "subscribe": 3,
                             "unsubscribe": 4}[r["action"]] for r in standin.requests)


@pytest.fixture
def sim_cameras():
    """The simulator's camera server on its own, in this process, at home pose."""
    from tidybot_exec.sim.camera_server import CameraServer
    from tidybot_exec.sim.render import Pose
    from tidybot_exec.sim.world import Scene, World
    from tidybot_sdk import kinematics as kin

    world = World(Scene.default(), lambda: np.eye(4))
    server = CameraServer(world, lambda: Pose(kin.HOME_Q.copy(), np.zeros(3), 0.0),
                          port=free_port())
    server.start()
    yield server
    server.stop()


class Client:
    """A plain WebSocket client of a camera server: requests, and frames kept apart."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.frames: list[tuple[dict, bytes]] = []

    def ask(self, msg: dict) -> dict:
        self.conn.send(json.dumps(msg))
        return self.text()

    def text(self) -> dict:
        while (message := self.next()) is None:
            pass
        return message

    def next(self) -> dict | None:
        """The next message: a text message, or None for a frame (kept in ``frames``)."""
        from tidybot_exec.cameras import protocol as cp
        message = self.conn.recv(timeout=20)
        if isinstance(message, bytes):
            self.frames.append(cp.unpack_frame(message))
            return None
        return json.loads(message)


def test_the_simulator_answers_both_dialects_with_realsense_intrinsics(sim_cameras):
    from websockets.sync.client import connect

    with connect(sim_cameras.address, open_timeout=10, compression=None, proxy=None) as conn:
        client = Client(conn)
        # nothing is pushed on connect: the first message is the answer to the first request
        state = client.ask({"type": 1})
        assert state["type"] == 2 and "action" not in state
        assert [c["name"] for c in state["data"]["cameras"]] == ["wrist", "base"]
        base = client.ask({"type": 7, "device_id": "base", "stream": "color"})
        assert base["type"] == 8 and set(base["data"]) == REALSENSE
        k = base["data"]
        assert (k["ppx"], k["ppy"], k["width"], k["height"]) == (160.0, 120.0, 320, 240)
        assert k["fx"] == k["fy"] > 0 and k["depth_scale"] == 0.001
        # no device, "any", "all": the first camera (wrist); depth is aligned to colour
        wrist = client.ask({"action": "get_intrinsics", "device_id": "wrist"})
        assert wrist == {"action": "get_intrinsics", "data": wrist["data"]}
        for device in ({}, {"device_id": "any"}, {"device_id": "all"}):
            assert client.ask({"type": 7, **device})["data"] == wrist["data"]
        assert client.ask({"action": "get_intrinsics", "stream": "depth"})["data"] == wrist["data"]
        # what the simulated cameras lack, or a request that asks two things, is refused
        infrared = client.ask({"type": 7, "device_id": "base", "stream": "infrared_left"})
        assert infrared["type"] == 6 and infrared["success"] is False
        assert "no infrared imagers" in infrared["error"]
        assert "unknown request type 9" in client.ask({"type": 9})["error"]
        mixed = client.ask({"action": "get_state", "type": 7})
        assert "ask different things" in mixed["error"] and mixed["action"] == "get_state"
        # subscribe (3) and unsubscribe (4) are ACKed (5); frames carry RealSense names too
        ack = client.ask({"type": 3, "device_id": "base", "streams": ["depth"], "fps": 30})
        assert (ack["type"], ack["success"], ack["data"]) == (5, True, {"subscribed": {"base": ["depth"]}})
        while not client.frames:
            pushed = client.next()
            assert pushed is None or "error" not in pushed, pushed      # e.g. no GL here
        header, _ = client.frames[0]
        assert header["camera_id"] == "base" and header["intrinsics"] == k
        ack = client.ask({"type": 4, "device_id": "base", "streams": ["depth"]})
        assert (ack["type"], ack["success"], ack["data"]) == (5, True, {"subscribed": {}})


def test_the_node_reads_the_simulators_ppx_ppy_as_cx_cy(sim_cameras):
    from tidybot_exec.cameras.source import CameraServerSource

    source = CameraServerSource(sim_cameras.address, rate_hz=5.0)
    try:
        assert source.wait_cameras(10.0) == ["wrist", "base"]
        k = source.intrinsics("base")
        assert (k["cx"], k["cy"]) == (k["ppx"], k["ppy"]) == (160.0, 120.0)
        assert source.simulated and source.error == ""
    finally:
        source.close()
