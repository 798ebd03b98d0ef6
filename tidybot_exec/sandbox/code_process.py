"""The process that runs the submitted code, inside the sandbox, stdlib only until the code
imports the SDK.

Cold: ``python -I -u code_process.py FILES REPORT_FD`` (started by the supervisor); warm:
the zygote's D calls ``confine`` and ``run_source``. It applies the resource limits, dies
with its parent, and runs the code as ``__main__`` compiled under the name
``<submitted>``, so tracebacks show the user's own line numbers. On an exception it writes
the one-line error with the user's line to the report pipe (bounded: ERROR_MAX_CHARS),
which its trusted parent passes on in the execution's report.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import sys
import traceback
import types
from pathlib import Path
from typing import IO

if not __package__:      # run as a script under -I: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tidybot_exec.sandbox import linux  # noqa: E402  (stdlib only)

FILENAME = "<submitted>"
ERROR_MAX_CHARS = 4096   # of the one-line error: the report pipe never fills (64 KiB), the
                         # code process never blocks on it, and the result stays readable
# The package directories whose frames are the SDK's internals, not the user's code.
_INTERNAL = tuple(str(Path(__file__).resolve().parents[2] / name) + os.sep
                  for name in ("tidybot_sdk", "robot_sdk", "tidybot_exec"))


def _limit(name: str, value: int) -> None:
    if value > 0:
        resource.setrlimit(getattr(resource, name), (value, value))


def _user_traceback(exc: BaseException) -> types.TracebackType | None:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


def _user_line(tb: types.TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _print_traceback(exc: BaseException, tb: types.TracebackType | None) -> None:
    """The traceback as the user needs it: the frames below the user's last one, when they
    go into the SDK, are its internals (a KeyboardInterrupt from a stop lands deep in a
    motion loop — in the SDK or a library it calls, msgpack, zmq; an SDK error is raised a
    few calls down) and become one line, without install paths."""
    frames = traceback.extract_tb(tb)
    keep = len(frames)
    while keep > 0 and frames[keep - 1].filename != FILENAME:
        keep -= 1
    if keep == 0 or keep == len(frames) or not frames[keep].filename.startswith(_INTERNAL):
        traceback.print_exception(type(exc), exc, tb)
        return
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames[:keep]),
             f"  ... {len(frames) - keep} frame(s) inside the tidybot SDK\n",
             *traceback.format_exception_only(type(exc), exc)]
    sys.stderr.write("".join(lines))


def confine(limits: dict) -> None:
    """The code process's own limits: KeyboardInterrupt on SIGINT, death with its parent,
    the resource limits and no core dumps."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    linux.die_with_parent(signal.SIGKILL, os.getppid())
    _limit("RLIMIT_AS", limits["address_space_bytes"])
    _limit("RLIMIT_NOFILE", limits["open_files"])
    _limit("RLIMIT_FSIZE", limits["file_size_bytes"])
    _limit("RLIMIT_NPROC", limits["processes"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_source(source: str, report: IO[str]) -> None:
    """Run ``source`` as ``__main__``; on an exception, print the user's traceback and
    write the one-line error to ``report``. Exits like the code would."""
    import linecache
    linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
    main = types.ModuleType("__main__")
    main.__file__ = FILENAME
    sys.modules["__main__"] = main
    sys.argv = [FILENAME]
    try:
        import tidybot_sdk  # (the SDK objects are ready before the code starts)
        from tidybot_sdk.compat import predecessor_globals
        main.__dict__.update(predecessor_globals(tidybot_sdk.robot))
        exec(compile(source, FILENAME, "exec", dont_inherit=True), main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        tb = _user_traceback(exc)
        _print_traceback(exc, tb)
        line = _user_line(tb)
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if len(error) > ERROR_MAX_CHARS:
            error = f"{error[:ERROR_MAX_CHARS]}... ({len(error)} characters; the whole " \
                    f"message is in stderr)"
        json.dump({"error": error + (f" (line {line})" if line else "")}, report)
        report.flush()
        sys.stderr.flush()
        if isinstance(exc, KeyboardInterrupt):
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        sys.exit(1)


def run(files: str, report_fd: str) -> None:
    """A cold execution's code process: its limits, then the code in ``files``."""
    with open(os.path.join(files, "run.json")) as f:
        spec = json.load(f)
    confine(spec["limits"])
    with open(os.path.join(files, "code.py"), encoding="utf-8") as f:
        source = f.read()
    run_source(source, os.fdopen(int(report_fd), "w"))


if __name__ == "__main__":
    run(*sys.argv[1:])
