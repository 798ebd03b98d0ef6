"""Pure core pieces on their own: validation, output capture, history store, executor."""
from __future__ import annotations

import json
import time

from tidybot_exec.executor import Executor, ExecutorSettings, Request
from tidybot_exec.history import History, Record
from tidybot_exec.output import FeedbackQueue, HeadTail, LineSplitter
from tidybot_exec.status import Status
from tidybot_exec.validation import validate


def test_validation_errors_and_lint_warnings():
    assert validate("x = 1\n", 100).error == ""
    assert validate("", 100).error == "code is empty"
    assert validate("x = 'é' * 10\n", 10).error == "code is 14 bytes, above the limit of 10 bytes"
    assert validate("return 5\n", 100).error.startswith("SyntaxError at line 1")
    nul = validate("x = '\0'", 100).error
    assert "null bytes" in nul and "None" not in nul
    warnings = validate("import subprocess\nimport os\nos.system('ls')\nx = input()\n", 1000).warnings
    assert warnings == ["line 1: importing subprocess starts other programs",
                        "line 3: os.system() runs a shell",
                        "line 4: input() waits for keyboard input that never comes"]


def test_head_tail_keeps_both_ends_and_counts_the_middle():
    capture = HeadTail(20)
    for i in range(100):
        capture.add(f"{i:03d}\n".encode())
    text = capture.text()
    assert capture.truncated and text.startswith("000\n001\n00")
    assert text.endswith("098\n099\n") and "[... 380 bytes omitted ...]" in text
    small = HeadTail(100)
    small.add(b"abc\n")
    assert not small.truncated and small.text() == "abc\n" and small.last(2) == "c\n"


def test_line_splitter_keeps_split_utf8_and_partial_lines():
    splitter = LineSplitter()
    data = "héllo\nwörld".encode()
    assert splitter.feed(data[:2]) == ""            # the é is cut in half
    assert splitter.feed(data[2:9]) == "héllo\n"
    assert splitter.feed(data[9:]) == ""
    assert splitter.flush() == "wörld"


def test_feedback_queue_budget_says_what_it_skipped():
    queue = FeedbackQueue(budget_bytes=10)
    queue.put("stdout", "12345\n")
    queue.put("stdout", "67890\n")               # over the budget: counted, not kept
    queue.put("stderr", "e\n")
    drained = dict(queue.drain())
    assert drained["stdout"].startswith("12345\n[tidybot] 6 bytes of stdout not sent")
    assert drained["stderr"] == "e\n"
    assert queue.drain() == []


def record(i: int) -> Record:
    return Record(execution_id=f"id{i}", holder="h", label=str(i), status=0, exit_code=0,
                  error="", started=float(i), finished=float(i) + 1, duration_s=1.0,
                  code_sha256="", code="", stdout_tail="", stderr_tail="", truncated=False)


def test_history_is_bounded_by_compaction_and_survives_a_torn_line(tmp_path):
    history = History(tmp_path, max_records=5)
    for i in range(12):
        history.append(record(i))
    lines = history.path.read_text().splitlines()
    assert 5 <= len(lines) < 10                     # compacted at 10 lines
    assert [r.execution_id for r in history.newest(3)] == ["id11", "id10", "id9"]
    with open(history.path, "a") as f:
        f.write('{"execution_id": "torn", "hol')    # a crash in the middle of a write
    reloaded = History(tmp_path, max_records=5)
    assert [r.execution_id for r in reloaded.newest()] == ["id11", "id10", "id9", "id8", "id7"]
    assert json.loads(lines[-1])["execution_id"] == "id11"


def test_executor_one_at_a_time_and_robot_stop_on_failure():
    stops = []
    executor = Executor(ExecutorSettings(stop_grace_s=0.5), lambda: stops.append(time.monotonic()))
    first = executor.submit(Request("import time\ntime.sleep(1)\n"), lambda *a: None)
    second = executor.submit(Request("print(1)"), lambda *a: None)
    assert second.status == Status.REJECTED and second.error.startswith("busy")
    assert executor.finish(first).status == Status.SUCCEEDED and stops == []
    failed = executor.run(Request("raise SystemExit(4)"), lambda *a: None)
    assert (failed.status, failed.exit_code, failed.error) == (Status.FAILED, 4, "exited with code 4")
    assert len(stops) == 1
    assert executor.current is None
