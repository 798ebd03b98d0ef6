"""Stop means stop (DESIGN §12.0): one registry of the robot's writers, the estop's order
(latch → refuse motion on every guard → cancel every rewind → hold → kill), a rewind that
stalls, a stopped rewind that cannot reach the next holder, and the code's bounded channel
to the node — judged by what the simulator itself received and measured.

The estop tests run twice: as is, and with the hold made slow by a backend that answers
late (the window the old order left between the hold and the refusal, widened on purpose).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

import numpy as np
import pytest

from service_harness import Harness
from support import sdk_config_for, wait_until
from tidybot_exec.execution.code_requests import BOUNDS, STOPPING_REFUSAL, CodeRequests
from tidybot_exec.execution import rewind_path, rewinds
from tidybot_exec.execution.records import Request, Status
from tidybot_exec.execution.writers import EXECUTION, REWIND, Writers
from tidybot_exec.guard.hold import RobotHold
from tidybot_exec.guard.relay import STOPPING_REFUSAL as GUARD_REFUSAL, Guard
from tidybot_exec.execution.rewind_path import Outcome, RewindRequest
from tidybot_sdk.protocol import GripperMsg, NodeMsg
from tidybot_sdk.transport import RequestClient

T = TypeVar("T")
NOT_MOTION = {"STOP", "GET_STATE"}
SLOW_HOLD_S = 0.4          # a backend that answers this late makes the hold this slow
SPED_UP = 0.02             # rad/s (arm joints) or m/s (base) above the slowest since the STOP


# ----------------------------------------------------------------- the registry, pure
class FakeGuard:
    def __init__(self) -> None:
        self.refused = 0
        self.settled = 0

    def refuse_motion(self) -> None:
        self.refused += 1

    def settle(self, timeout_s: float) -> bool:
        self.settled += 1
        return True


@pytest.mark.parametrize("halt_first", [True, False])
def test_a_guard_is_never_left_open_by_a_halt_whichever_comes_first(halt_first):
    writers = Writers()
    if halt_first:
        writers.halt(print, 0.5)
    writer = writers.add(EXECUTION, "goal")
    guard = FakeGuard()
    writer.guard(guard)
    if not halt_first:
        writers.halt(print, 0.5)
    assert guard.refused >= 1 and writers.halted
    writers.resume()
    later = writers.add(REWIND, "action")
    assert not later.cancelled.is_set()


def test_halt_cancels_every_rewind_and_an_ended_writer_neither_moves_nor_holds():
    writers = Writers()
    execution = writers.add(EXECUTION, "goal", execution_id="e1")
    rewinds = [writers.add(REWIND, origin, execution_id="e1") for origin in ("code", "on_failure")]
    other = writers.add(REWIND, "action", lease_token="t")
    assert [w.origin for w in writers.rewinds(execution_id="e1")] == ["code", "on_failure"]
    assert writers.rewinds(lease_token="t") == [other]
    assert writers.describe() == ["execution e1", "rewind (code) for execution e1",
                                  "rewind (on_failure) for execution e1", "rewind (action)"]
    guards = [FakeGuard() for _ in range(2)]
    execution.guard(guards[0])
    other.guard(guards[1])

    def broken() -> None:
        raise OSError("a tree that cannot be polled")
    execution.on_halt = broken                      # one writer's failure stops nothing else
    logged: list[str] = []
    assert writers.halt(logged.append, 0.5) == []
    assert "OSError" in logged[0]
    assert [g.refused >= 1 and g.settled == 1 for g in guards] == [True, True]
    assert all(w.cancelled.is_set() for w in [*rewinds, other])
    assert not execution.cancelled.is_set()          # the estop kills code, it is no rewind
    held: list[str] = []
    rewinds[0].end()
    assert rewinds[0].unless_ended(lambda: held.append("late") or ["held"]) == [] and not held
    assert rewinds[1].unless_ended(lambda: ["held"]) == ["held"]
    guard = FakeGuard()
    rewinds[0].guard(guard)
    assert guard.refused == 1                        # a guard of an ended writer is refused
    writers.remove(rewinds[0])
    assert rewinds[0].done.is_set() and rewinds[0] not in list(writers)


# ------------------------------------------------------- the code's channel, pure
def test_the_code_channel_answers_only_its_table_within_its_rates():
    now = [100.0]
    stopping = threading.Event()
    answered: list[int] = []
    table = CodeRequests({kind: (lambda msg, k=kind: answered.append(k) or {"ok": k})
                          for kind in BOUNDS}, stopping, clock=lambda: now[0])
    assert "unknown request 99" in table({"msg_type": 99})["error"]
    assert "unknown request" in table({"msg_type": "60"})["error"]
    burst = BOUNDS[NodeMsg.CAMERA_FRAME].burst
    replies = [table({"msg_type": int(NodeMsg.CAMERA_FRAME)}) for _ in range(burst + 3)]
    assert [r.get("ok") for r in replies[:burst]] == [NodeMsg.CAMERA_FRAME] * burst
    refused = replies[burst:]
    assert all(r["rate_limited"] and "too many CAMERA_FRAME requests" in r["error"]
               for r in refused)
    assert answered.count(NodeMsg.CAMERA_FRAME) == burst      # refused before the handler
    assert table({"msg_type": int(NodeMsg.SKILL)}) == {"ok": NodeMsg.SKILL}   # kinds apart
    now[0] += 1.5 / BOUNDS[NodeMsg.CAMERA_FRAME].per_s      # one token back, not two
    assert table({"msg_type": int(NodeMsg.CAMERA_FRAME)}) == {"ok": NodeMsg.CAMERA_FRAME}
    stopping.set()
    assert table({"msg_type": int(NodeMsg.SKILL)}) == {"error": STOPPING_REFUSAL}


# ------------------------------------------------------------- the guard's gate
def test_refusing_motion_ends_the_wait_for_a_blocking_move_at_once(sim_factory, tmp_path):
    """A gripper move blocks its reply until the fingers arrive; once motion is refused the
    guard stops waiting for it (a rewind's gripper phase ends with its cancel)."""
    simulator, wire = sim_factory()
    guard = Guard(sdk_config_for(simulator.config), tmp_path / "guard").start()
    code = RequestClient(guard.endpoints["gripper"]["cmd"], "gripper", 30.0)
    try:
        simulator.control({"cmd": "reply_delay", "server": "gripper", "value": 10.0})
        replies: list[dict] = []
        mover = threading.Thread(target=lambda: replies.append(code.request(
            {"msg_type": int(GripperMsg.MOVE), "position": 200, "speed": 20, "force": 50})))
        mover.start()
        wait_until(lambda: simulator.servers["gripper"].received["MOVE"] >= 1, 10,
                   "the move to reach the gripper")
        refused_at = time.monotonic()
        guard.refuse_motion()
        mover.join(5)
        assert replies == [{"error": GUARD_REFUSAL}]
        assert time.monotonic() - refused_at < 2.0          # not the 10 s the reply takes
        assert "MOVE" not in simulator.servers["gripper"].received.since(refused_at)
    finally:
        simulator.control({"cmd": "reply_delay", "server": "gripper", "value": 0.0})
        code.close()
        guard.close()


# ------------------------------------------------------- the service on a simulator
@pytest.fixture
def robot(tmp_path, sim_factory):
    """A service (cold, unsandboxed: the sandbox is tested elsewhere) on a simulator, whose
    hold really commands the simulator's backends."""
    simulator, wire = sim_factory()
    config = sdk_config_for(simulator.config)
    hold = RobotHold(config, lambda line: None)
    harness = Harness(tmp_path, "", grace_s=20.0, robot_hold=hold, settings={
        "sdk_config_json": config.to_json(), "warm_worker": False})
    wait_until(lambda: harness.service.recorder.current().q is not None
               and harness.service.recorder.current().base is not None, 20, "recorded state")
    yield harness, simulator, wire
    for name in simulator.servers:
        simulator.control({"cmd": "reply_delay", "server": name, "value": 0.0})
    harness.close()
    hold.close()


class Speeds:
    """The arm's and the base's measured speeds, each state message stamped with when the
    simulator made it (its own clocks, read back on time.monotonic()'s scale): under load a
    state can reach the test tens of ms after it was made, and a state from before the
    STOP must not be judged as one after it."""

    def __init__(self, wire, simulator) -> None:
        self.samples: list[tuple[float, str, float]] = []
        self._stop = threading.Event()
        # the arm's robot_time counts from its start; the base stamps the wall clock
        self._made = {"arm": lambda s: simulator.arm._started + s["robot_time"],
                      "base": lambda s: s["timestamp"] - (time.time() - time.monotonic())}
        self._threads = [threading.Thread(target=self._follow, args=(name,), daemon=True)
                         for name in ("arm", "base")]
        for thread in self._threads:
            thread.start()
        self._wire = wire

    def _follow(self, name: str) -> None:
        while not self._stop.is_set():
            try:
                state = self._wire.state(name, timeout=1.0)
            except Exception:  # noqa: BLE001 - a slow state: keep following
                continue
            v = state["dq"] if name == "arm" else state["base_velocity"][:2]
            self.samples.append((self._made[name](state), name, float(np.max(np.abs(v)))))

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(3)


def assert_stopped_for_good(simulator, speeds: Speeds, estop: tuple[float, float]) -> None:
    """Nothing but STOP and state queries reached a backend after the estop's reply, and
    from the estop's STOP on (the first after it was asked), that part only slowed down."""
    asked, replied = estop
    for name, server in simulator.servers.items():
        after = [m for m in server.received.since(replied) if m not in NOT_MOTION]
        # a stream target the arm read after the estop's STOP is ignored (the STOP left it
        # idle), and the simulator says so: that one did not move it
        ignored = after.count("ignored")
        applied = [m for m in after if m != "ignored"][ignored:]
        assert applied == [], f"{name} received {after} after the estop's reply"
    for name in ("arm", "base"):
        log = list(simulator.servers[name].received.log)
        stop_at = min(at for at, msg in log if msg == "STOP" and at >= asked)
        seen = [v for at, part, v in speeds.samples if part == name and at > stop_at + 0.02]
        assert seen, f"no {name} state after its STOP"
        # braking to the pose held at the STOP may overshoot a hair and come back (rad/s or
        # m/s of 1e-4); being driven again is a rise of a different order
        rise = max(b - min(seen[:i + 1]) for i, b in enumerate(seen))
        assert rise < SPED_UP, f"the {name} sped up by {rise:.4f} after its STOP"
        assert seen[-1] < 1e-3, f"the {name} still moves: {seen[-1]}"


def estop_while(robot, slow_hold: bool, driving: Callable[[], bool], what: str,
                ended: Callable[[], T]) -> T:
    """Once ``driving()``, estop — with the hold slowed by a gripper that answers late when
    ``slow_hold`` — then wait for ``ended()`` (returned) and for the robot to stand still,
    and check that nothing but stop commands reached a backend after the estop's reply and
    that each part only slowed down from the estop's STOP on."""
    harness, simulator, wire = robot
    speeds = Speeds(wire, simulator)
    try:
        wait_until(driving, 30, what)
        if slow_hold:
            simulator.control({"cmd": "reply_delay", "server": "gripper", "value": SLOW_HOLD_S})
        asked = time.monotonic()
        _, problems = harness.service.estop()
        replied = time.monotonic()
        assert not slow_hold or replied - asked >= SLOW_HOLD_S * 0.9 or problems, "not slow"
        outcome = ended()
        wait_until(lambda: max(map(abs, wire.state("arm")["dq"])) < 1e-6 and
                   max(map(abs, wire.state("base")["base_velocity"])) < 1e-6, 15,
                   "the robot to stop")
    finally:
        speeds.close()
    assert_stopped_for_good(simulator, speeds, (asked, replied))
    assert harness.service.snapshot().writers == ()
    return outcome


def move_away(harness, token: str) -> None:
    """MOVE_AWAY, run to its end (what went wrong, said whole when it did not succeed)."""
    result = harness.service.run(Request(MOVE_AWAY, timeout_s=60), token)
    assert result.status == Status.SUCCEEDED, f"{result.error}\n{result.stderr}"


def arm_moving(wire) -> bool:
    return max(map(abs, wire.state("arm")["dq"])) > 0.05


MOVE_AWAY = ("from tidybot_sdk import arm, base, rewind\n"
             "q = arm.get_state()['q']\nq[0] += 0.9\nq[3] += 0.4\narm.move_joints(q)\n"
             "base.move_delta(dx=0.3)\n")


@pytest.mark.parametrize("slow_hold", [False, True], ids=["hold", "slow-hold"])
def test_an_estop_during_an_action_rewind(robot, slow_hold):
    harness, _, wire = robot
    token = harness.token("alice")
    move_away(harness, token)
    outcomes: list = []
    rewinding = threading.Thread(target=lambda: outcomes.append(
        harness.service.rewind(RewindRequest("start"), token)))
    rewinding.start()
    estop_while(robot, slow_hold, lambda: harness.service.snapshot().writers == (
        "rewind (action) by alice",) and arm_moving(wire), "the rewind to drive",
        lambda: rewinding.join(20))
    (outcome,) = outcomes
    assert outcome.canceled and not outcome.success, outcome.message


@pytest.mark.parametrize("slow_hold", [False, True], ids=["hold", "slow-hold"])
def test_an_estop_during_a_rewind_the_code_asked_for(robot, slow_hold):
    harness, _, wire = robot
    token = harness.token("alice")
    run = harness.begin(MOVE_AWAY + "print('started', flush=True)\n"
                        "print(rewind.reset_to_home(), flush=True)\n"
                        "import time\ntime.sleep(60)\n", lease_id=token, timeout_s=120)
    writer = f"rewind (code) for execution {run.execution.id} by alice"
    result = estop_while(robot, slow_hold, lambda: writer in harness.service.snapshot().writers
                         and arm_moving(wire), "the code's rewind to drive", run.result)
    assert result.status == Status.CANCELED and result.error.startswith("emergency stop")


DRIVING = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
           "from tidybot_sdk import base\nprint('started', flush=True)\n"
           "while True:\n    base.drive(0.2, duration=0.2)\n")


@pytest.mark.parametrize("slow_hold", [False, True], ids=["hold", "slow-hold"])
def test_an_estop_during_streamed_base_motion(robot, slow_hold):
    harness, _, wire = robot
    run = harness.begin(DRIVING, lease_id=harness.token("alice"))
    result = estop_while(robot, slow_hold,
                         lambda: abs(wire.state("base")["base_velocity"][0]) > 0.1,
                         "the base to drive", run.result)
    assert result.status == Status.CANCELED and result.error.startswith("emergency stop")


def test_a_rewind_goes_on_from_where_it_was_after_a_stall(robot):
    """The node's rewind thread stalls 0.3 s mid-path (CI's load does such things): the
    path resumes where it was instead of jumping ahead, which the guard would refuse."""
    harness, _, wire = robot
    token = harness.token("alice")
    q0 = np.array(wire.state("arm")["q"])
    move_away(harness, token)
    stalled: list[float] = []

    def progress(fraction: float) -> None:
        if fraction > 0.4 and not stalled:
            stalled.append(fraction)
            time.sleep(0.3)        # the stall itself: this thread is the rewind's driver

    outcome = harness.service.rewind(RewindRequest("start", parts=("arm",)), token, progress)
    assert stalled and outcome.success, outcome.message
    assert np.max(np.abs(np.array(wire.state("arm")["q"]) - q0)) <= 0.02


GRIPPER_THEN_REWIND = (
    "from tidybot_sdk import arm, gripper, rewind\n"
    "gripper.activate()\n"
    "q = arm.get_state()['q']\nq[0] += 0.3\narm.move_joints(q)\n"
    "gripper.move(position=200)\n"
    "print('started', flush=True)\n"
    "print(rewind.reset_to_home(components=['arm', 'gripper']), flush=True)\n")


def test_a_stop_in_a_rewinds_gripper_phase_leaves_nothing_for_the_next_holder(robot):
    """The code's rewind waits for the gripper (its reply made late on purpose, past the
    rewind's gripper timeout) when the execution is stopped and the lease handed on; the
    next holder's goal, sent the moment it is granted, gets no STOP from the old one.
    (The gripper itself answers one request at a time, 8 s each here, so STOPs queued for it
    are handled late whoever sent them: the arm and the base are the ones judged.)"""
    harness, simulator, wire = robot
    token = harness.token("alice")
    run = harness.begin(GRIPPER_THEN_REWIND, lease_id=token, timeout_s=120)
    late_from = time.monotonic()
    simulator.control({"cmd": "reply_delay", "server": "gripper", "value": 8.0})
    wait_until(lambda: "MOVE" in simulator.servers["gripper"].received.since(late_from), 30,
               "the rewind's gripper phase")
    harness.service.stop(token)
    harness.leases.release(token)
    grants = harness.acquire("bob", wait_s=60)
    (grant,) = wait_until(lambda: grants, 30, "the lease to be handed on")
    started = time.monotonic()
    nxt = harness.service.run(Request("import time\nprint('bob')\ntime.sleep(6)\n"),
                              grant.lease_id)
    assert nxt.status == Status.SUCCEEDED, nxt.error
    assert run.result(30).status == Status.CANCELED
    late = {name: [m for m in simulator.servers[name].received.since(started) if m == "STOP"]
            for name in ("arm", "base")}
    assert late == {"arm": [], "base": []}, late


def test_a_code_rewind_that_ignores_its_cancel_is_ended_and_cannot_hold_late(robot, monkeypatch):
    """The execution's end waits for the rewind its code asked for only so long; one that
    ignores its cancel is ended then: when it gives up later, its hold is not sent (the
    robot is someone else's by then)."""
    harness, simulator, _ = robot
    entered, release = threading.Event(), threading.Event()

    def stubborn(upstream, plan, cancelled, progress, log, on_guard):
        entered.set()
        release.wait(60)                  # ignores its cancel
        return Outcome(False, "gave up late")

    monkeypatch.setattr(rewind_path, "drive", stubborn)
    monkeypatch.setattr(rewinds, "CODE_REWIND_JOIN_S", 0.5)
    token = harness.token("alice")
    run = harness.begin("from tidybot_sdk import arm, rewind\n"
                        "q = arm.get_state()['q']\nq[0] += 0.2\narm.move_joints(q)\n"
                        "print('started', flush=True)\nrewind.reset_to_home()\n",
                        lease_id=token, timeout_s=120)
    assert entered.wait(30)
    harness.service.stop(token)
    result = run.result(30)
    assert result.status == Status.CANCELED
    assert "did not end within 0.5s of its cancel" in result.error, result.error
    ended = time.monotonic()
    release.set()
    wait_until(lambda: any("gave up late" in e for e in harness.events), 10, "the rewind to end")
    late = {name: simulator.servers[name].received.since(ended) for name in ("arm", "base")}
    assert "STOP" not in late["arm"] + late["base"], late


# ------------------------------------------------------- several agents (DESIGN §12.3)
DRIVING_ON = DRIVING.split("signal.SIG_IGN)\n", 1)[1]     # a stop's SIGINT ends it
WAVING = ("from tidybot_sdk import arm\nq0 = arm.get_state()['q']\nq1 = list(q0)\nq1[0] += 0.5\n"
          "print('started', flush=True)\n"
          "while True:\n    arm.move_joints(q1)\n    arm.move_joints(q0)\n")


def two_agents(harness) -> tuple[str, str]:
    """Leases of disjoint parts: (the base's token, the arm and gripper's)."""
    return harness.token("nav", ["base"]), harness.token("arm-agent", ["arm", "gripper"])


def test_two_agents_drive_at_once_and_a_third_goal_waits_only_for_its_own_parts(robot):
    """Goals on leases of disjoint parts run side by side (both in execution/status, in the
    order they started); a second goal on the arm's lease is busy, naming the execution."""
    harness, _, wire = robot
    nav, arm_agent = two_agents(harness)
    driving = harness.begin(DRIVING_ON, lease_id=nav)
    waving = harness.begin(WAVING, lease_id=arm_agent)
    snap = harness.service.snapshot()
    assert snap.running_ids == (driving.execution.id, waving.execution.id)
    assert snap.current is waving.execution                 # the most recently started
    wait_until(lambda: arm_moving(wire) and abs(wire.state("base")["base_velocity"][0]) > 0.1,
               30, "the arm and the base to move at once")
    busy = harness.service.run(Request("print(1)"), arm_agent)
    assert busy.status == Status.REJECTED
    assert busy.error == (f"busy: execution {waving.execution.id} is running on the arm and "
                          f"the gripper; wait for it or stop it first")
    assert harness.service.stop(arm_agent)[0] == [waving.execution.id]
    assert harness.service.stop(nav)[0] == [driving.execution.id]
    assert {driving.result().status, waving.result().status} == {Status.CANCELED}


def test_a_stop_of_one_agent_holds_its_parts_and_the_other_drives_on(robot):
    """execution/stop with the arm agent's lease stops its execution and holds the arm and
    the gripper only (the hold sent to those two backends): the base agent's code goes on
    driving."""
    harness, _, wire = robot
    nav, arm_agent = two_agents(harness)
    driving = harness.begin(DRIVING_ON, lease_id=nav)
    waving = harness.begin(WAVING, lease_id=arm_agent)
    wait_until(lambda: arm_moving(wire), 30, "the arm to wave")
    assert harness.service.stop(arm_agent) == ([waving.execution.id], "")
    assert waving.result().status == Status.CANCELED
    assert "hold arm,gripper" in harness.events and "hold" not in harness.events
    x = wire.state("base")["base_pose"][0]
    wait_until(lambda: wire.state("base")["base_pose"][0] > x + 0.05, 30,
               "the base to drive on")
    assert harness.service.snapshot().running_ids == (driving.execution.id,)
    assert harness.service.stop(nav) == ([driving.execution.id], "")
    assert driving.result().status == Status.CANCELED


@pytest.mark.parametrize("slow_hold", [False, True], ids=["hold", "slow-hold"])
def test_an_estop_during_two_agents_executions_stops_both(robot, slow_hold):
    """An estop stops every execution, with §12.0's order, and holds every part."""
    harness, _, wire = robot
    nav, arm_agent = two_agents(harness)
    driving = harness.begin(DRIVING, lease_id=nav)
    waving = harness.begin(WAVING, lease_id=arm_agent)
    results = estop_while(
        robot, slow_hold,
        lambda: arm_moving(wire) and abs(wire.state("base")["base_velocity"][0]) > 0.1,
        "the arm and the base to move at once", lambda: (driving.result(), waving.result()))
    for result in results:
        assert result.status == Status.CANCELED and result.error.startswith("emergency stop")
    assert harness.events.count("hold") >= 1              # every part, not only one lease's
