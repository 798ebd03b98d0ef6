"""Pure core pieces on their own: validation, output capture, history store, the
skills module's names."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

from support import ROOT
from tidybot_exec.execution.history import History, Record
from tidybot_exec.execution.output import FeedbackQueue, HeadTail, LineSplitter
from tidybot_exec.execution.validation import validate


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


def record(i: int, holder: str = "h", status: int = 0) -> Record:
    return Record(execution_id=f"id{i}", holder=holder, label=str(i), status=status, exit_code=0,
                  error="", started=float(i), finished=float(i) + 1, duration_s=1.0,
                  code_sha256=f"sha{i}", code=f"code {i}", stdout_tail="", stderr_tail="",
                  truncated=i % 2 == 0, dry_run=i % 3 == 0)


def test_history_is_bounded_pages_and_filters(tmp_path):
    history = History(tmp_path, max_records=5)
    for i in range(12):
        history.append(record(i, holder="a" if i % 2 else "b", status=i % 3))
    page = history.page(limit=3)
    assert page.total == 5 and [r.execution_id for r in page.records] == ["id11", "id10", "id9"]
    assert all(r.code == "" and r.code_sha256 for r in page.records)    # no bodies unless asked
    assert history.page(offset=3, limit=3).records[0].execution_id == "id8"
    mine = history.page(holder="a", statuses=[0, 2], include_code=True)
    assert [(r.execution_id, r.code) for r in mine.records] == [("id11", "code 11"), ("id9", "code 9")]
    assert mine.total == 2
    history.close()
    reloaded = History(tmp_path, max_records=5)
    assert [r.execution_id for r in reloaded.newest()] == ["id11", "id10", "id9", "id8", "id7"]
    assert reloaded.newest(1)[0] == record(11, holder="a", status=2)    # every field survives


def test_history_migrates_an_old_jsonl_file_once(tmp_path):
    old = tmp_path / "history.jsonl"
    lines = [json.dumps(vars(record(i))) for i in range(3)]
    old.write_text("\n".join(lines) + '\n{"execution_id": "torn", "hol')   # torn by a crash
    history = History(tmp_path, max_records=10)
    assert [r.execution_id for r in history.newest()] == ["id2", "id1", "id0"]
    assert not old.exists() and (tmp_path / "history.jsonl.migrated").exists()
    history.close()
    assert len(History(tmp_path, max_records=10).newest()) == 3          # not imported twice


def test_a_history_written_by_an_older_version_gains_the_new_fields(tmp_path):
    """Round 3 added replay_of and skills: a database without them is opened, its records
    read with the defaults, and new records keep theirs."""
    import sqlite3

    old_fields = [f for f in vars(record(0)) if f not in ("replay_of", "skills")]
    with sqlite3.connect(tmp_path / "history.sqlite3") as db:
        db.execute(f"CREATE TABLE executions (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                   f"{', '.join(old_fields)})")
        db.execute(f"INSERT INTO executions ({', '.join(old_fields)}) VALUES "
                   f"({', '.join('?' * len(old_fields))})", [vars(record(1))[f] for f in old_fields])
    history = History(tmp_path, max_records=10)
    assert history.get("id1") == record(1)
    replay = Record(**{**vars(record(2)), "replay_of": "id1", "skills": "pick@2 place@1"})
    history.append(replay)
    assert history.get("id2") == replay and history.get("nothing") is None


def test_a_returned_append_survives_a_crash(tmp_path):
    """SIGKILL right after append() returned: the record is in the database."""
    code = ("import os, signal, sys; sys.path[:0] = sys.argv[2:]\n"
            "from tidybot_exec.execution.history import History\n"
            "from test_core_units import record\n"
            "History(sys.argv[1], 10).append(record(7))\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    here = str(__import__("pathlib").Path(__file__).parent)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), here, str(ROOT)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert [r.execution_id for r in History(tmp_path, 10).newest()] == ["id7"]


def test_tidybot_skills_has_no_public_name_a_skill_could_have():
    """Module __getattr__ is asked only for names the module lacks: any other public name
    of tidybot_skills would shadow the skill of that name."""
    import tidybot_skills
    from tidybot_exec.execution.skills import RESERVED

    public = {n for n in dir(tidybot_skills) if not n.startswith("_")}
    assert public == RESERVED == set(tidybot_skills.__all__)


def test_a_traceback_ends_at_the_users_line_when_it_goes_on_into_the_sdk(capsys):
    """Below the user's last frame, the SDK and whatever it calls (msgpack here; a stop's
    KeyboardInterrupt can land there too) are one line; a library the user called directly
    keeps its frames."""
    from tidybot_exec.sandbox.code_process import FILENAME, _print_traceback

    def traceback_of(source: str) -> str:
        try:
            exec(compile(source, FILENAME, "exec"), {})
        except Exception as exc:  # noqa: BLE001 - what the code process prints for it
            _print_traceback(exc, exc.__traceback__.tb_next)
        return capsys.readouterr().err

    through_sdk = traceback_of("from tidybot_sdk import protocol\n"
                               "protocol.encode({'x': object()})\n")
    assert 'File "<submitted>", line 2' in through_sdk
    assert "frame(s) inside the tidybot SDK\nTypeError" in through_sdk, through_sdk
    assert "msgpack" not in through_sdk and "tidybot_sdk/" not in through_sdk
    direct = traceback_of("import json\njson.loads('{')\n")
    assert "inside the tidybot SDK" not in direct and "json" in direct.split("line 2")[1]
