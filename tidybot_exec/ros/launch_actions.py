"""launch_plan's processes as launch actions, for the launch files (needs launch, launch_ros).

Imported only by launch/*.launch.py, where the launch packages are installed; the plan
itself stays in launch_plan.py, which plain tests check without them. The rules are the
plan's (launch_plan's docstring): a process starts once those it comes ``after`` have
printed their ``ready_text``; a required process that exits ends the launch with an error
in ``exit_reason``'s words, and so does one that never says it serves within
READY_TIMEOUT_S.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ament_index_python.packages import get_package_prefix
from launch.actions import ExecuteProcess, OpaqueFunction, RegisterEventHandler, TimerAction
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch_ros.actions import Node

from tidybot_exec.ros.launch_plan import READY_TIMEOUT_S, LaunchFailed, Process, exit_reason


def actions(processes: Iterable[Process]) -> list:
    """The plan's processes as actions: those with nothing to wait for at once, the others
    from event handlers on the output of those they come after."""
    gate = _Gate(list(processes))
    out: list = []
    for p, action in zip(gate.processes, gate.actions):
        if p.required:
            out.append(RegisterEventHandler(OnProcessExit(
                target_action=action,
                on_exit=lambda event, context, p=p: _end(p, event.returncode,
                                                         p.name in gate.ready, context))))
        if p.ready_text:
            out.append(RegisterEventHandler(OnProcessIO(target_action=action,
                                                        on_stdout=gate.watcher(p))))
        if not p.after:
            out.append(action)
    if gate.waiting:
        out.append(TimerAction(period=READY_TIMEOUT_S, actions=[OpaqueFunction(
            function=gate.deadline)]))
    return out


class _Gate:
    """Which processes said they serve, and which wait for them. Processes are told apart
    by position: a fleet's nodes share a name (each in its own namespace); the processes
    named in ``after`` (simulators, bridges) have names of their own."""

    def __init__(self, processes: list[Process]) -> None:
        self.processes = processes
        self.actions = [_action(p) for p in processes]
        self.ready: set[str] = set()
        self.waiting = {i for i, p in enumerate(processes) if p.after}

    def watcher(self, p: Process):
        """An on_stdout handler: once ``p`` prints its ready text, start every process whose
        ``after`` processes have all said they serve."""
        tail = b""

        def on_stdout(event) -> list | None:
            nonlocal tail
            if p.name in self.ready:
                return None
            text = tail + event.text           # the ready text may be split across reads
            tail = text[-len(p.ready_text):]
            if p.ready_text.encode() not in text:
                return None
            self.ready.add(p.name)
            due = sorted(i for i in self.waiting if set(self.processes[i].after) <= self.ready)
            self.waiting.difference_update(due)
            return [self.actions[i] for i in due] or None
        return on_stdout

    def deadline(self, context) -> None:
        """READY_TIMEOUT_S after the start: if a process still waits, end the launch, naming
        the first process it waits for that has not said it serves."""
        late = [q for i in sorted(self.waiting) for q in self.processes
                if q.name in self.processes[i].after and q.name not in self.ready]
        if late:
            _end(late[0], None, False, context)


def _end(p: Process, code: int | None, was_ready: bool, context) -> None:
    """End the launch with an error that says why (launch logs "Caught exception in launch:
    <reason>", shuts everything down and exits 1, as for a bad argument); nothing when it
    is shutting down already (then every process exits, and that is no news)."""
    if not context.is_shutdown:
        raise LaunchFailed(exit_reason(p, code, was_ready))


def _action(p: Process):
    """A Node for a ROS node, an ExecuteProcess (from lib/<package>) for the rest."""
    if p.is_ros_node:
        return Node(package=p.package, executable=p.executable, name=p.name,
                    namespace=p.namespace,
                    parameters=[*p.params_files, *([p.parameters] if p.parameters else [])],
                    # unbuffered, so output is live; no emulated tty, so no colour codes in
                    # output piped to a file
                    output="screen", additional_env={"PYTHONUNBUFFERED": "1"})
    exe = str(Path(get_package_prefix(p.package)) / "lib" / p.package / p.executable)
    return ExecuteProcess(cmd=[exe, *p.arguments], name=p.name, output="screen",
                          sigterm_timeout="5", additional_env={"PYTHONUNBUFFERED": "1"})
