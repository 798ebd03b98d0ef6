"""``tidybot-run``: run a Python file on the robot and stream its output here.

    tidybot-run script.py            # or: -c CODE, or - for standard input
    tidybot-run --history 5          # the last finished executions
    tidybot-run --status             # execution and lease status
    tidybot-run --describe           # the SDK manual and the limits the robot enforces
    tidybot-run --rewind start --lease-id TOKEN   # back to where that lease began (also:
                                     # execution, steps N, fraction F, safe; --dry-run plans)
    tidybot-run --replay ID [--dry-run]   # run a past execution again; diff of its stdout
    tidybot-run --skills [QUERY]     # the saved skills (docs/skills.md)
    tidybot-run --save-skill NAME FILE [--dry-runs N]   # or: --save-skill NAME --from ID
    tidybot-run --export-skill NAME[@VERSION] DIR       # DIR/NAME: README.md, main.py, skill.json
    tidybot-run --import-skill DIR/NAME [--dry-runs N]

Output arrives live: the code's stdout on this stdout, its stderr on this stderr. Ctrl-C
cancels the run (the robot stops and holds); a second Ctrl-C leaves at once. Without
--lease-id a lease is acquired (and renewed) for the run and released after it.
The exit code follows the status (see EXIT_CODES).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import rclpy
from action_msgs.msg import GoalStatus
from tidybot_interfaces.action import ExecuteCode

from tidybot_exec.clients import skill_cli
from tidybot_exec.clients.client import (ExecutionHandle, TidybotClient, TidybotClientError,
                                         resources_arg, spun_client)
from tidybot_exec.execution.records import Status
from tidybot_exec.execution.skills import MAX_DRY_RUNS

EXIT_CODES = {Status.SUCCEEDED: 0, Status.FAILED: 1, Status.TIMEOUT: 3, Status.CANCELED: 4,
              Status.REJECTED: 5, Status.ERROR: 6}
EXIT_UNREACHABLE = 7      # no server, or no lease
EXIT_FORCED = 130         # second Ctrl-C


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="tidybot-run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes: 0 succeeded, 1 failed, 3 timeout, 4 canceled, 5 rejected, "
               "6 server error, 7 server or lease unavailable, 130 left with a second Ctrl-C")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("file", nargs="?", help="Python file to run ('-' reads standard input)")
    src.add_argument("-c", dest="code", metavar="CODE", help="run this code")
    src.add_argument("--history", type=int, nargs="?", const=10, metavar="N",
                     help="print the last N finished executions and exit")
    src.add_argument("--status", action="store_true", help="print execution and lease status")
    src.add_argument("--rewind", nargs="+", metavar=("TARGET", "AMOUNT"),
                     help="rewind the robot along its recorded trajectory: start, execution, "
                          "steps N, fraction F (0..1) or safe (docs/rewind.md)")
    src.add_argument("--describe", action="store_true",
                     help="print the SDK manual and the limits the server enforces, and exit")
    src.add_argument("--replay", metavar="ID",
                     help="run that finished execution's code again with the skill versions "
                          "it used, and show a diff of its stdout against the original's")
    src.add_argument("--skills", nargs="?", const="", metavar="QUERY",
                     help="list the saved skills (whose name, description or docstring "
                          "contains QUERY)")
    src.add_argument("--save-skill", nargs="+", metavar=("NAME", "FILE"),
                     help="save FILE (or, with --from, an execution's code) as a new version "
                          "of skill NAME")
    src.add_argument("--export-skill", nargs=2, metavar=("NAME[@VERSION]", "DIR"),
                     help="write the skill into DIR/NAME (README.md, main.py, skill.json)")
    src.add_argument("--import-skill", metavar="DIR",
                     help="save the skill folder DIR as a new version here")
    p.add_argument("--from", dest="from_execution", default="", metavar="ID",
                   help="with --save-skill: save the code of that succeeded execution")
    p.add_argument("--dry-runs", type=dry_run_count, default=0, metavar="N",
                   help="with --save-skill/--import-skill: prove it on N dry runs first")
    p.add_argument("--description", default="",
                   help="with --save-skill: what it does (default: its docstring)")
    p.add_argument("--timeout", type=float, default=0.0, metavar="S",
                   help="wall-clock limit in seconds (default: the server's)")
    p.add_argument("--label", default="", help="free text kept in history and status")
    p.add_argument("--dry-run", action="store_true",
                   help="run against a private simulation (with --rewind: plan only)")
    p.add_argument("--on-failure", choices=("hold", "rewind"), default="hold",
                   help="when the code fails or times out: hold where it is (default) or "
                        "rewind its own motion to where it began, then hold")
    p.add_argument("--parts", default="", metavar="LIST",
                   help="with --rewind: comma-separated subset of arm,base,gripper "
                        "(default arm,base: the gripper only when named)")
    p.add_argument("--lease-id", default=None, help="use this lease instead of acquiring one")
    p.add_argument("--holder", default=f"tidybot-run@{socket.gethostname()}:{os.getpid()}",
                   help="lease holder name (default: tidybot-run@host:pid)")
    p.add_argument("--resources", type=resources_arg, default=(), metavar="LIST",
                   help="the lease acquired for the run: comma-separated subset of "
                        "arm,gripper,base (default: the whole robot); code that commands "
                        "another part is refused (ResourceNotLeased)")
    p.add_argument("--wait-lease", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds in line for the lease (default: fail if held)")
    p.add_argument("--wait-server", type=float, default=30.0, metavar="S",
                   help="how long to wait for the server, or for --status its status (default 30)")
    p.add_argument("--namespace", default="", help="namespace of the tidybot_exec node")
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON object on stdout (live output goes to stderr)")
    return p.parse_args(argv)


def dry_run_count(text: str) -> int:
    """--dry-runs: 0 .. MAX_DRY_RUNS."""
    if not text.isascii() or not text.isdigit() or int(text) > MAX_DRY_RUNS:
        raise argparse.ArgumentTypeError(f"must be a whole number 0..{MAX_DRY_RUNS}, got {text!r}")
    return int(text)


def read_code(args: argparse.Namespace) -> str:
    if args.code is not None:
        return args.code
    if args.file == "-":
        return sys.stdin.read()
    with open(args.file, encoding="utf-8") as f:
        return f.read()


class Progress:
    """A one-line progress note on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def show(self, text: str) -> None:
        if self.tty:
            sys.stderr.write(f"\r\033[K{text}")
            sys.stderr.flush()

    def clear(self) -> None:
        self.show("")


def result_json(result: ExecuteCode.Result) -> str:
    return json.dumps({
        "execution_id": result.execution_id, "status": Status(result.status).name.lower(),
        "status_code": int(result.status), "exit_code": int(result.exit_code),
        "error": result.error, "duration_s": result.duration_s, "truncated": result.truncated,
        "stdout": result.stdout, "stderr": result.stderr,
        "collisions": list(result.collisions), "moved_objects": list(result.moved_objects)})


def world_lines(result: ExecuteCode.Result) -> str:
    """What a run on a simulator did to its world, for people ("" on hardware: nothing)."""
    return "".join([*(f"tidybot-run: collision: {line}\n" for line in result.collisions),
                    *(f"tidybot-run: moved: {line}\n" for line in result.moved_objects)])


class LiveOutput:
    """The code's output as it arrives (feedback), completed from the result at the end:
    feedback and result travel on different channels, so the last lines may come after the
    result — they are taken from it rather than lost; when feedback was lost on the way
    (a gap in its seq) the whole output is shown again. Keeps only how much was shown."""

    def __init__(self, to_stderr_only: bool) -> None:
        self._to_stderr_only = to_stderr_only
        self._shown = {"stdout": 0, "stderr": 0}

    def write(self, stream: str, text: str) -> None:
        out = sys.stderr if (stream == "stderr" or self._to_stderr_only) else sys.stdout
        out.write(text)
        out.flush()
        self._shown[stream] += len(text)

    def pump(self, handle: ExecutionHandle) -> None:
        for fb in handle.feedback():
            self.write(fb.stream, fb.text)

    def finish(self, handle: ExecutionHandle, result: ExecuteCode.Result) -> None:
        self.pump(handle)
        if result.truncated:        # no whole output to continue from
            return
        if handle.lost_feedback:
            sys.stderr.write(f"\ntidybot-run: {handle.lost_feedback} feedback messages were "
                             f"lost on the way; the whole output again:\n")
            self._shown = {"stdout": 0, "stderr": 0}
        for stream, full in (("stdout", result.stdout), ("stderr", result.stderr)):
            if len(full) > self._shown[stream]:
                self.write(stream, full[self._shown[stream]:])


@contextmanager
def leased(client: TidybotClient, args: argparse.Namespace, progress: Progress) -> Iterator[None]:
    """The lease --lease-id names, or one acquired (and renewed) now and released after."""
    acquired = args.lease_id is None
    if acquired:
        progress.show("acquiring the lease...")
        client.acquire(args.holder, wait_s=args.wait_lease, resources=args.resources)
    else:
        client.lease_id = args.lease_id
    progress.clear()
    try:
        yield
    finally:
        if acquired:
            release(client)


def run(client: TidybotClient, args: argparse.Namespace, progress: Progress) -> int:
    code = "" if args.replay else read_code(args)
    original = client.record(args.replay) if args.replay else None
    live = LiveOutput(args.json)
    with leased(client, args, progress):
        handle = client.execute(code, timeout_s=args.timeout, label=args.label,
                                dry_run=args.dry_run, replay_of=args.replay or "",
                                on_failure="" if args.on_failure == "hold" else args.on_failure)
        if not follow(handle, lambda: live.pump(handle)):
            return EXIT_FORCED
        result = handle.result()
        live.finish(handle, result)
    if original is not None and result.status != Status.REJECTED:
        sys.stderr.write(skill_cli.replay_diff(original, client.record(result.execution_id)))
    if handle.recovered:
        sys.stderr.write(f"tidybot-run: recovered from lost replies: {', '.join(handle.recovered)}\n")
    if args.json:
        print(result_json(result))
        return EXIT_CODES[Status(result.status)]
    sys.stderr.write(world_lines(result))
    if result.status != Status.SUCCEEDED:
        sys.stderr.write(f"tidybot-run: {Status(result.status).name.lower()}: {result.error}\n")
    return EXIT_CODES[Status(result.status)]


def follow(handle: ExecutionHandle, pump: Callable[[], None]) -> bool:
    """Until the goal is done: ``pump`` what arrived; the first Ctrl-C cancels the goal (the
    robot holds), a second one leaves at once (returns False)."""
    interrupts: list[float] = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupts.append(time.monotonic()))
    try:
        canceled = False
        while not handle.is_done():
            pump()
            if interrupts and not canceled:
                canceled = True
                sys.stderr.write("\ntidybot-run: canceling (Ctrl-C again to leave at once)\n")
                threading.Thread(target=handle.cancel, daemon=True).start()
            elif len(interrupts) > 1:
                return False
            time.sleep(0.02)
        return True
    finally:
        signal.signal(signal.SIGINT, previous)


def release(client: TidybotClient) -> None:
    try:
        client.release()
    except TidybotClientError as exc:
        sys.stderr.write(f"tidybot-run: {exc}\n")


def rewind(client: TidybotClient, args: argparse.Namespace, progress: Progress) -> int:
    """``--rewind TARGET [AMOUNT] --lease-id TOKEN``: 0 when done, 4 canceled, 1 refused or
    failed, 2 bad arguments."""
    target, *rest = args.rewind
    try:
        amount = float(rest[0]) if rest else 0.0
    except ValueError:
        sys.stderr.write(f"tidybot-run: --rewind {target}: {rest[0]!r} is not a number\n")
        return 2
    if args.lease_id is None:      # a lease acquired now has recorded nothing to undo
        sys.stderr.write("tidybot-run: --rewind needs --lease-id: the lease whose recorded "
                         "motion to undo\n")
        return 2
    try:
        handle = client.rewind(target, amount, [p for p in args.parts.split(",") if p.strip()],
                               dry_run=args.dry_run, lease_id=args.lease_id)
        shown = [0.0]

        def pump() -> None:
            for fb in handle.feedback():
                shown[0] = fb.fraction
            progress.show(f"rewinding: {shown[0]:.0%}")
        if not follow(handle, pump):
            return EXIT_FORCED
        result = handle.result()
    finally:
        progress.clear()
    if args.json:
        print(json.dumps({"success": result.success, "message": result.message,
                          "waypoints": int(result.waypoints), "duration_s": result.duration_s}))
    else:
        (sys.stdout if result.success else sys.stderr).write(f"tidybot-run: {result.message}\n")
    if result.success:
        return 0
    return EXIT_CODES[Status.CANCELED] if handle.action_status == GoalStatus.STATUS_CANCELED else 1


def save_skill(client: TidybotClient, args: argparse.Namespace, progress: Progress) -> int:
    """--save-skill NAME (FILE | --from ID) and --import-skill DIR, under the lease."""
    if args.import_skill:
        with leased(client, args, progress):
            return skill_cli.import_skill(client, args.import_skill, args.dry_runs)
    name, *files = args.save_skill
    if len(files) > 1 or bool(files) == bool(args.from_execution):
        sys.stderr.write("tidybot-run: --save-skill NAME takes one FILE or --from ID\n")
        return 2
    try:
        code = open(files[0], encoding="utf-8").read() if files else ""
    except OSError as exc:
        sys.stderr.write(f"tidybot-run: {exc}\n")
        return 2
    with leased(client, args, progress):
        return skill_cli.save_skill(client, name, code, args.description, args.from_execution,
                                    args.dry_runs)


def show_history(client: TidybotClient, count: int, as_json: bool) -> int:
    records = client.history(count)
    if as_json:
        print(json.dumps([{"execution_id": r.execution_id, "holder": r.holder, "label": r.label,
                           "status": Status(r.status).name.lower(), "exit_code": r.exit_code,
                           "error": r.error, "duration_s": r.duration_s,
                           "started": r.started.sec + r.started.nanosec / 1e9,
                           "code_sha256": r.code_sha256} for r in records]))
        return 0
    for r in records:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started.sec))
        print(f"{started}  {r.execution_id}  {Status(r.status).name.lower():9s} "
              f"{r.duration_s:7.2f}s  {r.holder or '-'}  {r.label or '-'}  {r.error}")
    return 0


def show_description(client: TidybotClient) -> int:
    answer = client.describe()
    print(answer.markdown)
    print(f"## Limits in force (tidybot_exec {answer.sdk_version})\n\n```yaml\n"
          f"{answer.limits_yaml}```")
    return 0


def show_status(client: TidybotClient, as_json: bool, wait_s: float) -> int:
    # Both topics are latched, so this returns once discovery delivers them: a generous
    # bound costs nothing when the server is up (under load discovery alone took over 5 s).
    execution, lease = client.status(wait_s)
    if execution is None or lease is None:
        print(f"tidybot-run: no status received from the server within {wait_s:g}s",
              file=sys.stderr)
        return EXIT_UNREACHABLE
    data = {"state": execution.state, "execution_id": execution.execution_id,
            "holder": execution.holder, "label": execution.label,
            "elapsed_s": execution.elapsed_s, "lease_held": lease.held,
            "lease_holder": lease.holder, "lease_seconds_to_lapse": lease.seconds_to_lapse,
            "waiting_holders": list(lease.waiting_holders)}
    print(json.dumps(data) if as_json else "\n".join(f"{k}: {v}" for k, v in data.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.file and args.file != "-" and not os.path.isfile(args.file):
        print(f"tidybot-run: no such file: {args.file}", file=sys.stderr)
        return 2
    progress = Progress()
    with spun_client("tidybot_run", args.namespace,
                     signal_handler_options=rclpy.signals.SignalHandlerOptions.NO) as client:
        try:
            if args.status:
                return show_status(client, args.json, args.wait_server)
            progress.show("waiting for tidybot_exec...")
            if not client.wait_for_server(args.wait_server):
                progress.clear()
                print(f"tidybot-run: no tidybot_exec server within {args.wait_server:g}s "
                      f"(namespace {args.namespace or '/'})", file=sys.stderr)
                return EXIT_UNREACHABLE
            progress.clear()
            if args.history is not None:
                return show_history(client, args.history, args.json)
            if args.describe:
                return show_description(client)
            if args.skills is not None:
                return skill_cli.list_skills(client, args.skills, args.json)
            if args.export_skill:
                return skill_cli.export_skill(client, *args.export_skill,
                                              robot=f"{socket.gethostname()}:{args.namespace or '/'}")
            if args.save_skill or args.import_skill:
                return save_skill(client, args, progress)
            code = rewind(client, args, progress) if args.rewind else run(client, args, progress)
            if code == EXIT_FORCED:         # leave at once: no rclpy teardown to wait for
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            return code
        except TidybotClientError as exc:
            progress.clear()
            print(f"tidybot-run: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE

if __name__ == "__main__":
    sys.exit(main())
