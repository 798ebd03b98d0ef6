"""Malformed input never crashes a server; fault injection works; tidybot-sim as a process."""
from __future__ import annotations

import signal
import time

import pytest
import zmq

from support import Proc, Wire, free_port, python_cmd, sim_config, wait_until
from tidybot_sdk.protocol import ArmMsg, BaseMsg, GripperMsg, ProtocolError, decode, encode
from tidybot_sdk.errors import BackendUnavailable
from tidybot_sdk.transport import RequestClient, endpoint

GARBAGE = [b"", b"\xc1\xc1", encode([1, 2, 3]), encode("hello"), encode({"msg_type": "10"}),
           encode({"msg_type": 77}), encode({"msg_type": 10, "q": "abc"}),
           encode({"msg_type": 12, "position": "x"}), encode({"msg_type": 13, "pose": [0.0] * 15}),
           encode({"msg_type": 30, "x": 1}), encode({"msg_type": 16, "open_mm": [1]})]
# the few of those that are valid commands for one backend (unknown fields are ignored)
VALID = {"gripper": {10, 13}, "base": {10, 12, 13, 16}, "arm": {12, 16, 30}}


def msg_type_of(data: bytes):
    try:
        return decode(data).get("msg_type")
    except ProtocolError:
        return None


def raw_request(address: str, data: bytes) -> dict:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        sock.send(data)
        assert sock.poll(3000), "the server did not answer a malformed request"
        return decode(sock.recv())
    finally:
        sock.close()


@pytest.mark.parametrize("server,ping", [
    ("arm", ArmMsg.GET_STATE), ("gripper", GripperMsg.RESET), ("base", BaseMsg.GET_STATE)])
def test_malformed_requests_get_an_error_reply_and_the_server_keeps_serving(sim, server, ping):
    simulator, wire = sim
    address = wire.cmd[server].address
    garbage = [d for d in GARBAGE if msg_type_of(d) not in VALID[server]]
    for data in garbage:
        reply = raw_request(address, data)
        if server == "gripper":
            assert reply["success"] is False and reply["message"], data
        else:
            assert reply.get("error"), data
    assert "error" not in wire.req(server, ping)
    assert simulator.servers[server].received["invalid"] + simulator.servers[server].received[
        "internal_error"] == len(garbage)
    assert simulator.servers[server].received["internal_error"] == 0


def test_garbage_on_the_arm_stream_is_ignored(sim):
    simulator, wire = sim
    pub = wire.stream
    for data in GARBAGE:
        pub._sock.send(data)
        time.sleep(0.01)
    wait_until(lambda: simulator.arm.received["invalid_stream"] > 0, 2, "the stream to be read")
    assert wire.req("arm", ArmMsg.GET_STATE)["robot_mode"] is not None


def test_freeze_state_stops_publishing_until_unfrozen(sim):
    simulator, wire = sim
    wire.state("arm")
    simulator.control({"cmd": "freeze_state", "server": "arm", "value": True})
    time.sleep(0.1)
    frozen_at = wire.states["arm"].count
    time.sleep(0.5)
    assert wire.states["arm"].count == frozen_at
    with pytest.raises(BackendUnavailable, match="stale"):
        wire.states["arm"].latest(max_age_s=0.3)
    assert wire.req("arm", ArmMsg.GET_STATE)["q"]      # commands still answered
    simulator.control({"cmd": "freeze_state", "server": "arm", "value": False})
    wire.state("arm")


def test_dropped_reply_times_out_and_the_client_recovers(sim):
    simulator, wire = sim
    simulator.control({"cmd": "drop_replies", "server": "base", "value": 1})
    client = RequestClient(wire.cmd["base"].address, "base", timeout_s=0.5)
    with pytest.raises(BackendUnavailable, match="did not answer within 0.5s"):
        client.request({"msg_type": BaseMsg.GET_STATE})
    assert "base_pose" in client.request({"msg_type": BaseMsg.GET_STATE})
    client.close()


def test_reply_delay(sim):
    simulator, wire = sim
    simulator.control({"cmd": "reply_delay", "server": "arm", "value": 0.3})
    start = time.monotonic()
    wire.req("arm", ArmMsg.GET_STATE)
    assert time.monotonic() - start >= 0.3


def test_unknown_control_requests_are_refused(sim):
    simulator, _ = sim
    assert simulator.control({"cmd": "explode", "server": "arm"})["ok"] is False
    assert "server must be one of" in simulator.control({"cmd": "kill", "server": "x"})["error"]


def start_sim_process(procs, tmp_path, config, *extra: str) -> Proc:
    ports = lambda ps: ",".join(map(str, ps))  # noqa: E731
    proc = Proc(python_cmd("tidybot_exec.sim.cli", "--arm-ports", ports(config.arm_ports),
                           "--gripper-ports", ports(config.gripper_ports),
                           "--base-ports", ports(config.base_ports), "--camera-port", "0",
                           *extra),
                tmp_path, "tidybot_sim")
    procs.append(proc)
    proc.wait_for_output("listening", 20)
    return proc


def test_sim_process_kill_and_restart_a_server_through_the_control_socket(procs, tmp_path):
    config = sim_config()
    control_port = free_port()
    start_sim_process(procs, tmp_path, config, "--control-port", str(control_port))
    control = RequestClient(endpoint("127.0.0.1", control_port), "control")
    wire = Wire(config)
    try:
        wire.state("arm")
        assert control.request({"cmd": "kill", "server": "arm"}) == {"ok": True}
        with pytest.raises(BackendUnavailable):
            wire.cmd["arm"].request({"msg_type": ArmMsg.GET_STATE}, timeout_s=0.5)
        with pytest.raises(BackendUnavailable):
            wire.states["arm"].wait_next(0.5)
        assert control.request({"cmd": "restart", "server": "arm"}) == {"ok": True}
        assert "q" in wire.cmd["arm"].request({"msg_type": ArmMsg.GET_STATE})
        wire.state("arm")                                   # state flows again
        stats = control.request({"cmd": "stats"})
        assert stats["running"] == {"arm": True, "gripper": True, "base": True}
        assert stats["received"]["arm"]["GET_STATE"] >= 1
    finally:
        wire.close()
        control.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sim_process_prints_endpoints_and_exits_cleanly(procs, tmp_path, sig):
    config = sim_config()
    proc = start_sim_process(procs, tmp_path, config, "--initial-base-pose", "1,2,0.5")
    assert f"tcp://127.0.0.1:{config.arm_ports[0]}" in proc.stdout
    wire = Wire(config)
    try:
        assert wire.state("base")["base_pose"] == [1.0, 2.0, 0.5]
    finally:
        wire.close()
    proc.signal(sig)
    assert proc.wait(10) == 0
    assert "Traceback" not in proc.stderr


def test_sim_process_refuses_a_port_in_use_and_a_bad_seed(procs, tmp_path):
    config = sim_config()
    first = start_sim_process(procs, tmp_path, config)
    second = Proc(python_cmd("tidybot_exec.sim.cli", "--camera-port", "0", "--arm-ports",
                             ",".join(map(str, config.arm_ports))), tmp_path, "second")
    procs.append(second)
    assert second.wait(20) == 2
    assert "Address already in use" in second.stderr and "Traceback" not in second.stderr
    bad = Proc(python_cmd("tidybot_exec.sim.cli", "--camera-port", "0", "--initial-q",
                          "0,0,0,0,0,0,0"), tmp_path, "bad")
    procs.append(bad)
    assert bad.wait(20) == 2
    assert "within the Panda limits" in bad.stderr
    assert first.alive()
