"""Two agents at once: "nav" drives the base in a square while "arm-agent" waves the arm.

Each agent is a TidybotClient with a lease on its own parts ("nav": the base; "arm-agent":
the arm and the gripper), so their goals run side by side, each in its own sandbox behind
its own guard (docs/leases.md, "Several agents"). Their output is printed as it arrives,
each line after its agent's name, so the two interleave. Run it where a node is up (on the
simulator: ``./tidybot run ros2 launch tidybot_exec tidybot_exec.launch.py``; a real robot
needs 0.7 m of free floor behind it and to its right):

    ./tidybot run python examples/two_agents.py

Both clients share one ROS node: a client is a lease and its goals, not a node. Two
processes, or two terminals with ``tidybot-run --resources``, work the same way. The exit
code is 0 only when both runs succeeded.
"""
from __future__ import annotations

import sys
import time

import rclpy
from tidybot_interfaces.action import ExecuteCode

from tidybot_exec.clients.client import TidybotClient, TidybotClientError, spun_client
from tidybot_exec.execution.records import Status

BASE_SQUARE = '''\
"""A 0.4 m square behind the base and to its right (the simulator's table is in front),
slid along without turning: the base is holonomic."""
from tidybot_sdk import base, sensors

for corner, (dx, dy) in enumerate([(-0.4, 0.0), (0.0, -0.4), (0.4, 0.0), (0.0, 0.4)], 1):
    base.move_delta(dx=dx, dy=dy, frame="local")     # dx: forward, dy: to the left
    x, y, _ = sensors.get_base_pose()
    print(f"corner {corner}: x={x:.2f} y={y:.2f}")
'''
ARM_WAVE = '''\
"""Wave: swing the first joint left and right, saying where the base is meanwhile."""
from tidybot_sdk import arm, sensors

home = arm.HOME_POSITION
for wave in range(1, 6):
    for swing in (0.3, -0.3):
        arm.move_joints([home[0] + swing, *home[1:]], duration=1.5)
    x, y, _ = sensors.get_base_pose()      # reading a part another agent drives is allowed
    print(f"wave {wave}: the base is at x={x:.2f} y={y:.2f}")
arm.go_home()
print("arm back home")
'''


def say(name: str, line: str, out=sys.stdout) -> None:
    """One whole line in one write: the two agents' lines come from two threads."""
    out.write(f"{name:>9} | {line}\n")
    out.flush()


class Agent:
    """One agent: its client (and lease), its run, and its output shown as it arrives."""

    def __init__(self, client: TidybotClient, name: str, resources: list[str]) -> None:
        self.client, self.name, self.resources = client, name, resources

    def start(self, code: str) -> None:
        self.client.acquire(self.name, resources=self.resources)
        self.run = self.client.execute(code, label=f"two_agents: {self.name}", timeout_s=120.0,
                                       feedback_callback=self._show)

    def _show(self, feedback: ExecuteCode.Feedback) -> None:
        """Each line as it arrives (in the thread that spins the node; whole lines)."""
        for line in feedback.text.splitlines():
            say(self.name, line, sys.stderr if feedback.stream == "stderr" else sys.stdout)

    def finish(self) -> ExecuteCode.Result:
        """Wait for the result and say how it ended."""
        result = self.run.result(timeout_s=180.0)
        say(self.name, f"{Status(result.status).name.lower()} in {result.duration_s:.1f} s"
            + (f": {result.error}" if result.error else ""))
        return result


def main() -> int:
    # Ctrl-C raises KeyboardInterrupt here (rclpy's handler would end ROS before the release)
    with spun_client("two_agents",
                     signal_handler_options=rclpy.signals.SignalHandlerOptions.NO) as client:
        if not client.wait_for_server(30):
            print("two_agents: no tidybot_exec node answered within 30 s", file=sys.stderr)
            return 1
        agents = [Agent(client, "nav", ["base"]),
                  Agent(TidybotClient(client.node), "arm-agent", ["arm", "gripper"])]
        began = time.monotonic()
        try:
            agents[0].start(BASE_SQUARE)
            agents[1].start(ARM_WAVE)
            results = [agent.finish() for agent in agents]
        except TidybotClientError as exc:
            print(f"two_agents: {exc}", file=sys.stderr)
            return 1
        finally:            # also on Ctrl-C: a released lease stops its code, the parts hold
            for agent in agents:
                agent.client.release()
        print(f"both done in {time.monotonic() - began:.1f} s; one after the other they would "
              f"take {sum(r.duration_s for r in results):.1f} s", flush=True)
        return 0 if all(r.status == Status.SUCCEEDED for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
