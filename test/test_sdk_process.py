"""The SDK as submitted code uses it: a separate process configured through the environment.

Covers the predecessor's scripts running unchanged via robot_sdk, interrupt safety (SIGINT
and SIGTERM mid-motion stop the robot before the process ends), and the reference doc.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from support import ROOT, Proc, sdk_config_for, wait_until
from tidybot_sdk import describe
from tidybot_sdk.backend import stop_on_interrupt
from tidybot_sdk.config import ENV_VAR

SCRIPTS = ROOT / "test" / "predecessor_scripts"


def run_script(procs, tmp_path, sim, args: list[str], name: str) -> Proc:
    proc = Proc([sys.executable, *args], tmp_path, name,
                env={ENV_VAR: sdk_config_for(sim.config).to_json()})
    procs.append(proc)
    return proc


@pytest.mark.parametrize("script,expected", [
    ("simple_move.py", "Moved to x="),
    ("pick_and_place.py", "Holding object: True"),
    ("error_handling.py", "Recovered"),
])
def test_predecessor_scripts_run_unchanged(sim_factory, procs, tmp_path, script, expected):
    simulator, _ = sim_factory(object_width_mm=40.0)
    proc = run_script(procs, tmp_path, simulator, [str(SCRIPTS / script)], script)
    assert proc.wait(120) == 0, proc.describe()
    assert expected in proc.stdout


def test_error_handling_messages_say_what_to_do(sim_factory, procs, tmp_path):
    simulator, _ = sim_factory()
    proc = run_script(procs, tmp_path, simulator, [str(SCRIPTS / "error_handling.py")], "errors")
    assert proc.wait(60) == 0, proc.describe()
    out = proc.stdout
    assert "Caught ArmError: q must be 7 finite numbers" in out
    assert "Caught GripperError: give exactly one of position=" in out
    assert "Caught ArmSafetyError: end-effector target z=-1.0000 m is outside the workspace box" in out


LONG_MOVE = ("from tidybot_sdk import arm\n"
             "print('moving', flush=True)\n"
             "arm.move_joints([1.2, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785], duration=6)\n")


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, -signal.SIGINT), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_interrupt_mid_motion_stops_the_arm_and_it_holds(sim, procs, tmp_path, sig, code):
    simulator, wire = sim
    proc = run_script(procs, tmp_path, simulator, ["-c", LONG_MOVE], "mover")
    wait_until(lambda: wire.state("arm")["q"][0] > 0.15, 30, "the arm to be moving")
    proc.signal(sig)
    assert proc.wait(10) == code, proc.describe()
    assert simulator.arm.received["STOP"] == 1
    assert wire.arm_holding(timeout=2.0)["q"][0] < 1.1   # stopped well before the target


@pytest.mark.parametrize("sig,raised", [(signal.SIGINT, KeyboardInterrupt),
                                        (signal.SIGTERM, SystemExit)], ids=["SIGINT", "SIGTERM"])
def test_a_repeated_interrupt_does_not_cut_the_stop_command_short(sig, raised):
    """A second signal while the motion is being stopped (Linux repeats the supervisor's
    parent-death signal; people press Ctrl-C twice) must not abort the stop command."""
    finished = []

    def stop() -> None:
        os.kill(os.getpid(), sig)        # arrives while the stop command is on its way
        time.sleep(0.1)                  # a handler would raise here
        finished.append(True)

    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(raised):
            with stop_on_interrupt(stop):
                raise raised()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # restored


def test_reference_doc_is_generated_from_the_code():
    assert (ROOT / "docs" / "sdk.md").read_text() == describe(), (
        "docs/sdk.md is out of date: regenerate it with "
        "./tidybot run python -c 'import tidybot_sdk; print(tidybot_sdk.describe(), end=\"\")' > docs/sdk.md")


def test_reference_covers_every_public_method():
    text = describe()
    from tidybot_sdk import arm_api, base_api, gripper_api, sensors_api
    for name, cls in (("arm", arm_api.ArmAPI), ("base", base_api.BaseAPI),
                      ("gripper", gripper_api.GripperAPI), ("sensors", sensors_api.SensorAPI)):
        for attr in dir(cls):
            if not attr.startswith("_") and callable(getattr(cls, attr)):
                assert f"`{name}.{attr}(" in text, f"{name}.{attr} missing from the reference"
