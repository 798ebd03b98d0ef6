"""Skills and replay on the real node and simulator: the store (save, list, get, versions,
every refusal), importing by name inside the sandbox (latest, pinned, nested, missing), the
statistics, replay, and tidybot-run's skill commands with the folder round trip."""
from __future__ import annotations

import json
import sqlite3
import subprocess
from contextlib import closing

import pytest
from tidybot_interfaces.srv import GetHistory, GetSkill, ListSkills, SaveSkill

from support import ROOT, wait_until
from tidybot_exec.execution.records import Status

SCALE = '''def scale(x: float) -> float:
    """Multiply x by FACTOR.

    A toy skill: each version has its own factor."""
    return FACTOR * x


FACTOR = {factor}

if __name__ == "__main__":
    print("scale(2) =", scale(2))
'''
TWICE = '''from tidybot_skills import scale


def twice(x: float) -> float:
    """scale, applied twice (a skill that imports a skill)."""
    return scale(scale(x))
'''
MOVES = '''from tidybot_sdk import arm, sensors


def nudge(dq: float = 0.1) -> None:
    """Turn the first arm joint by dq and back."""
    q = sensors.get_arm_joints()
    q[0] += dq
    arm.move_joints(q)
    q[0] -= dq
    arm.move_joints(q)


if __name__ == "__main__":
    nudge()
    print("nudged")
'''


@pytest.fixture(scope="module")
def lease(stack):
    _, client = stack
    reply = client.acquire("skill-tests", ttl_s=1800)
    assert reply.success, reply.message
    yield reply.lease_id
    client.release(reply.lease_id)


def save(stack, lease_id: str, name: str, code: str = "", **fields) -> SaveSkill.Response:
    _, client = stack
    return client.call("skills/save", SaveSkill.Request(lease_id=lease_id, name=name, code=code,
                                                        **fields), timeout=300)


def run(stack, lease_id: str, code: str = "", **fields):
    _, client = stack
    status, result = client.run(code, lease_id=lease_id, timeout=120, **fields)
    return result


def record(stack, execution_id: str):
    _, client = stack
    records = client.call("execution/history", GetHistory.Request(
        max_count=1, execution_id=execution_id, include_code=True)).records
    return records[0] if records else None


def listed(stack, query: str = "", all_versions: bool = False) -> dict:
    _, client = stack
    reply = client.call("skills/list", ListSkills.Request(query=query, all_versions=all_versions))
    return {f"{s.name}@{s.version}": s for s in reply.skills}


def test_save_list_get_and_immutable_versions(stack, lease):
    first = save(stack, lease, "scale", SCALE.format(factor=2))
    assert (first.success, first.version, first.message) == (True, 1, "saved scale@1")
    second = save(stack, lease, "scale", SCALE.format(factor=3), description="times three")
    assert (second.success, second.version) == (True, 2)
    newest = listed(stack, "scale")
    assert list(newest) == ["scale@2"]
    info = newest["scale@2"]
    assert info.signature == "scale(x: float) -> float"
    assert info.description == "times three" and info.docstring.startswith("Multiply x by FACTOR.")
    assert info.saved_by == "skill-tests" and info.saved.sec > 0 and len(info.code_sha256) == 64
    both = listed(stack, "scale", all_versions=True)
    assert list(both) == ["scale@1", "scale@2"]
    assert both["scale@1"].description == "Multiply x by FACTOR."     # the docstring's summary
    _, client = stack
    got = client.call("skills/get", GetSkill.Request(name="scale", version=1))
    assert got.success and "FACTOR = 2" in got.code and got.skill.version == 1
    latest = client.call("skills/get", GetSkill.Request(name="scale"))
    assert latest.skill.version == 2 and "FACTOR = 3" in latest.code
    missing = client.call("skills/get", GetSkill.Request(name="scale", version=9))
    assert not missing.success and missing.message == "skill scale has no version 9; it has 1, 2"
    unknown = client.call("skills/get", GetSkill.Request(name="nope"))
    assert not unknown.success and "no skill named 'nope'; the store has" in unknown.message
    assert "scale" in unknown.message


@pytest.mark.parametrize("name, code, lease_kind, fragment", [
    ("2fast", "def x(): pass\n", "valid", "must be a Python identifier"),
    ("load", "def load(): pass\n", "valid", "is taken by tidybot_skills itself"),
    ("grab", "def other(): pass\n", "valid", "defines no top-level function grab()"),
    ("grab", "def grab(:\n", "valid", "SyntaxError at line 1"),
    ("grab", "", "valid", "code is empty"),
    ("grab", "def grab(): pass\n", "none", "no lease"),
    ("grab", "def grab(): pass\n", "forged", "invalid lease"),
], ids=["bad name", "reserved name", "no function", "syntax", "no code", "no lease", "forged lease"])
def test_each_refusal_says_why_and_saves_nothing(stack, lease, name, code, lease_kind, fragment):
    token = {"valid": lease, "none": "", "forged": "not-a-lease"}[lease_kind]
    before = listed(stack, all_versions=True).keys()
    reply = save(stack, token, name, code)
    assert not reply.success and fragment in reply.message, reply.message
    assert reply.version == 0 and listed(stack, all_versions=True).keys() == before


def test_dry_runs_need_the_block_they_run(stack, lease):
    reply = save(stack, lease, "undemonstrated", "def undemonstrated():\n    return 1\n", dry_runs=2)
    assert not reply.success and 'it has none: add one' in reply.message, reply.message
    assert "undemonstrated@1" not in listed(stack)


def test_code_nested_too_deeply_is_refused_and_the_node_keeps_serving(stack, lease):
    """A compiler RecursionError (a 2 KB module) is a refusal, in a save and in a goal."""
    deep = "x = " + "+".join(["1"] * 3000) + "\ndef deep():\n    pass\n"
    reply = save(stack, lease, "deep", deep)
    assert not reply.success and "nested too deeply" in reply.message, reply.message
    default = "def deep(x=" + "+".join(["1"] * 600) + "):\n    pass\n"
    reply = save(stack, lease, "deep", default)
    assert not reply.success and "nested too deeply" in reply.message, reply.message
    result = run(stack, lease, deep)
    assert result.status == Status.REJECTED and "nested too deeply" in result.error
    assert run(stack, lease, "print('still serving')\n").stdout == "still serving\n"


def test_saving_from_an_execution_needs_one_that_succeeded(stack, lease):
    failed = run(stack, lease, "def grab():\n    pass\nraise RuntimeError('no')\n")
    assert failed.status == Status.FAILED
    reply = save(stack, lease, "grab", from_execution_id=failed.execution_id)
    assert not reply.success and f"execution {failed.execution_id} ended FAILED" in reply.message
    reply = save(stack, lease, "grab", from_execution_id="000000000000")
    assert not reply.success and "no finished execution '000000000000'" in reply.message
    good = run(stack, lease, "def grab():\n    return 'got it'\n\nprint(grab())\n")
    assert good.status == Status.SUCCEEDED, good.error
    reply = save(stack, lease, "grab", "def grab(): pass\n", from_execution_id=good.execution_id)
    assert not reply.success and "not both" in reply.message
    reply = save(stack, lease, "grab", from_execution_id=good.execution_id)
    assert reply.success, reply.message
    assert listed(stack, "grab")[f"grab@{reply.version}"].from_execution_id == good.execution_id


def test_dry_runs_prove_a_skill_before_it_is_saved(stack, lease):
    reply = save(stack, lease, "nudge", MOVES, dry_runs=2)
    assert reply.success and reply.dry_runs_passed == 2, reply.message
    proofs = reply.message.split(": ", 1)[1].split(", ")
    assert len(proofs) == 2
    for k, execution_id in enumerate(proofs, 1):
        proof = record(stack, execution_id)
        assert proof.dry_run and proof.status == Status.SUCCEEDED
        assert proof.label == f"skill nudge: dry run {k}/2" and "nudged" in proof.stdout_tail
    assert listed(stack, "nudge")[f"nudge@{reply.version}"].dry_runs_passed == 2

    failing = MOVES.replace('print("nudged")', 'raise RuntimeError("dropped it")')
    reply = save(stack, lease, "nudge", failing, dry_runs=3)
    assert not reply.success and reply.dry_runs_passed == 0
    assert "not saved: dry run 1 of 3" in reply.message and "RuntimeError: dropped it" in reply.message
    assert list(listed(stack, "nudge")) == ["nudge@1"]


def test_a_dry_run_with_a_guard_refusal_does_not_prove_a_skill(stack, lease):
    """The module swallows the guard's refusal and exits 0: still no proof."""
    sly = ("from tidybot_sdk import robot\nfrom tidybot_sdk.protocol import GripperMsg\n\n\n"
           "def squeeze():\n    try:\n        robot.backend('gripper').request(GripperMsg.CLOSE, "
           "speed=255, force=255)\n    except Exception as exc:\n        print('refused:', exc)\n\n\n"
           "if __name__ == '__main__':\n    squeeze()\n")
    reply = save(stack, lease, "squeeze", sly, dry_runs=1)
    assert not reply.success and "the safety guard refused 1 command(s)" in reply.message, reply.message
    assert "squeeze@1" not in listed(stack)


def test_import_latest_pinned_nested_and_the_record_lists_them(stack, lease):
    mult = SCALE.replace("scale", "mult")
    for factor in (2, 3):
        assert save(stack, lease, "mult", mult.format(factor=factor)).success
    assert save(stack, lease, "twice", TWICE.replace("scale", "mult")).success
    code = ("import tidybot_skills\nfrom tidybot_skills import mult, twice\n"
            "print(mult(1), tidybot_skills.load('mult', 1)(1), twice(1))\n"
            "print(tidybot_skills.load('mult', 1) is tidybot_skills.load('mult', 1))\n")
    result = run(stack, lease, code)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert result.stdout == "3 2 9\nTrue\n"          # v2 multiplies by 3, v1 by 2
    assert record(stack, result.execution_id).skills == ["mult@2", "twice@1", "mult@1"]

    result = run(stack, lease, "from tidybot_skills import nope\n")
    assert result.status == Status.FAILED
    assert "SkillNotFound: no skill named 'nope'; the store has" in result.error, result.error
    assert "mult" in result.error and "twice" in result.error
    caught = run(stack, lease, "try:\n    from tidybot_skills import nope\n"
                               "except ImportError as exc:\n    print('ImportError')\n")
    assert caught.stdout == "ImportError\n"
    pinned = run(stack, lease, "import tidybot_skills\ntidybot_skills.load('mult', 7)\n")
    assert "skill mult has no version 7; it has 1, 2" in pinned.error


def test_latest_is_the_store_as_the_goal_saw_it_when_it_started(stack, lease):
    """A version saved while the goal runs: found when pinned, not as "latest"."""
    _, client = stack
    code = ("import time, tidybot_skills\nprint('ready', flush=True)\n"
            "deadline = time.monotonic() + 60\nwhile True:\n    try:\n"
            "        print('pinned', tidybot_skills.load('late', 1)())\n        break\n"
            "    except tidybot_skills.SkillNotFound:\n"
            "        assert time.monotonic() < deadline, 'never saved'\n        time.sleep(0.05)\n"
            "try:\n    from tidybot_skills import late\nexcept ImportError as exc:\n"
            "    print('latest:', exc)\n")
    goal = client.send(code, lease_id=lease)
    wait_until(lambda: "ready" in goal.stdout(), 60, "the goal to start")
    assert save(stack, lease, "late", "def late():\n    return 'v1'\n").success
    _, result = goal.result(120)
    assert "pinned v1\n" in result.stdout, result.stdout + result.stderr
    assert "latest: skill late was first saved after this goal started" in result.stdout
    assert record(stack, result.execution_id).skills == ["late@1"]


def test_the_skill_channel_refuses_malformed_requests(stack, lease):
    """What the code may send the node for a skill: a name and a small version, else an
    error reply (the node keeps serving)."""
    code = ("from tidybot_sdk import robot\nfrom tidybot_sdk.errors import TidybotError\n"
            "for name, version in (('x' * 10000, 0), ('mult', True), ('mult', 2 ** 40), (7, 0)):\n"
            "    reply = robot.node_channel.request({'msg_type': 80, 'name': name, "
            "'version': version}, 10, TidybotError, 'skill')\n"
            "    print(reply.get('error', reply)[:60])\n")
    result = run(stack, lease, code)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert result.stdout.splitlines() == ["a skill is asked for by name and a version (0: the latest)"] * 4


def test_a_skills_traceback_shows_its_own_lines(stack, lease):
    broken = 'def broken():\n    """Fails."""\n    raise ValueError("inside the skill")\n'
    assert save(stack, lease, "broken", broken).success
    result = run(stack, lease, "from tidybot_skills import broken\nbroken()\n")
    assert result.status == Status.FAILED
    assert 'File "<skill broken@1>", line 3, in broken' in result.stderr, result.stderr
    assert 'raise ValueError("inside the skill")' in result.stderr


# A complete row: on a writable store this INSERT succeeds (the test proves it on a copy).
INSERT_EVIL = ("INSERT INTO skills (name, version, description, signature, docstring, code, "
               "code_sha256, from_execution_id, dry_runs_passed, saved, saved_by, origin) "
               "VALUES ('evil', 1, '', 'evil()', '', 'def evil(): pass', '', '', 0, 0, 'code', '')")


def test_the_store_is_not_writable_from_code(stack, lease, tmp_path):
    from tidybot_exec.ros.params import robot_history_dir

    s, _ = stack
    store = str(robot_history_dir(s.params["history_dir"], s.namespace) / "skills.sqlite3")
    copy = tmp_path / "skills.sqlite3"
    with closing(sqlite3.connect(store)) as db, closing(sqlite3.connect(copy)) as writable:
        db.backup(writable)
    with closing(sqlite3.connect(f"file:{copy}?mode=rw", uri=True)) as writable:
        assert writable.execute(INSERT_EVIL).rowcount == 1      # the write the code tries
    before = listed(stack, all_versions=True)
    code = (f"import os, sqlite3\nprint('visible:', os.path.exists({store!r}))\ntry:\n"
            f"    db = sqlite3.connect('file:' + {store!r} + '?mode=rw', uri=True)\n"
            f"    db.execute({INSERT_EVIL!r})\n    db.commit()\n"
            f"    print('wrote')\nexcept Exception as exc:\n    print('refused:', type(exc).__name__)\n")
    result = run(stack, lease, code)
    assert "visible: False" in result.stdout, result.stdout          # hidden in the sandbox
    assert "refused:" in result.stdout and "wrote" not in result.stdout, result.stdout
    assert listed(stack, all_versions=True).keys() == before.keys()
    with sqlite3.connect(store) as db:             # the node's own store is intact
        assert db.execute("SELECT COUNT(*) FROM skills WHERE name = 'evil'").fetchone()[0] == 0


def test_statistics_follow_the_executions_that_imported_a_version(stack, lease):
    assert save(stack, lease, "counted", "def counted():\n    return 1\n").success
    assert listed(stack, "counted")["counted@1"].runs == 0
    run(stack, lease, "from tidybot_skills import counted\ncounted()\n")
    run(stack, lease, "from tidybot_skills import counted\nraise SystemExit(3)\n")
    run(stack, lease, "from tidybot_skills import counted\nprint(counted())\n", dry_run=True)
    info = listed(stack, "counted")["counted@1"]
    assert (info.runs, info.successes) == (3, 2)


def test_replay_runs_the_same_code_with_the_same_skill_versions(stack, lease):
    assert save(stack, lease, "greet", 'def greet():\n    return "hello v1"\n').success
    original = run(stack, lease, "from tidybot_skills import greet\nprint(greet())\n", label="orig")
    assert original.stdout == "hello v1\n"
    assert save(stack, lease, "greet", 'def greet():\n    return "hello v2"\n').success
    again = run(stack, lease, replay_of=original.execution_id, dry_run=True)
    assert again.status == Status.SUCCEEDED and again.stdout == "hello v1\n", again.error
    replay = record(stack, again.execution_id)
    assert (replay.replay_of, replay.skills, replay.dry_run) == (original.execution_id, ["greet@1"], True)
    assert replay.code == record(stack, original.execution_id).code
    fresh = run(stack, lease, "from tidybot_skills import greet\nprint(greet())\n")
    assert fresh.stdout == "hello v2\n"               # without the replay: the latest
    mixed = run(stack, lease, "import tidybot_skills\nfrom tidybot_skills import greet\n"
                              "print(greet(), tidybot_skills.load('greet', 1)())\n")
    assert mixed.stdout == "hello v2 hello v1\n"
    assert save(stack, lease, "greet", 'def greet():\n    return "hello v3"\n').success
    again = run(stack, lease, replay_of=mixed.execution_id)
    assert again.stdout == "hello v2 hello v1\n", again.stdout     # latest then, not now
    assert record(stack, again.execution_id).skills == ["greet@2", "greet@1"]
    unknown = run(stack, lease, replay_of="ffffffffffff")
    assert unknown.status == Status.REJECTED and "no finished execution 'ffffffffffff'" in unknown.error
    both = run(stack, lease, "print(1)\n", replay_of=original.execution_id)
    assert both.status == Status.REJECTED and "leave code empty" in both.error


def test_describe_tells_an_agent_the_skills(stack, lease):
    from tidybot_interfaces.srv import Describe

    assert save(stack, lease, "described", SCALE.replace("scale", "described").format(factor=4)).success
    _, client = stack
    text = client.call("sdk/describe", Describe.Request()).skills_markdown
    assert "from tidybot_skills import NAME" in text
    assert "### described(x: float) -> float" in text and "Multiply x by FACTOR." in text


# ------------------------------------------------------------------ tidybot-run
def tidybot_run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["tidybot-run", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_tidybot_run_saves_lists_exports_and_imports_a_skill(stack, lease, tmp_path):
    source = tmp_path / "wave.py"
    source.write_text('def wave(times: int = 1) -> str:\n    """Wave the gripper."""\n'
                      '    return "wave" * times\n\n\nif __name__ == "__main__":\n'
                      '    print(wave(2))\n')
    done = tidybot_run("--save-skill", "wave", str(source), "--dry-runs", "1", "--lease-id", lease)
    assert done.returncode == 0 and "saved wave@1 after 1 dry run(s)" in done.stdout, done.stderr
    shown = tidybot_run("--skills", "wave")
    assert "wave@1  wave(times: int=1) -> str" in shown.stdout and "Wave the gripper." in shown.stdout
    listing = json.loads(tidybot_run("--skills", "--json").stdout)
    assert "wave" in {s["name"] for s in listing}

    exported = tidybot_run("--export-skill", "wave@1", str(tmp_path / "lib"))
    assert exported.returncode == 0, exported.stderr
    folder = tmp_path / "lib" / "wave"
    assert (folder / "main.py").read_text() == source.read_text()
    assert (folder / "README.md").read_text().startswith("# wave\n\nWave the gripper.\n")
    meta = json.loads((folder / "skill.json").read_text())
    assert (meta["version"], meta["dry_runs_passed"]) == (1, 1)
    imported = tidybot_run("--import-skill", str(folder), "--lease-id", lease)
    assert imported.returncode == 0 and "saved wave@2" in imported.stdout, imported.stderr
    info = listed(stack, "wave")["wave@2"]
    assert info.origin.startswith("imported from wave/: wave@1 on ")
    assert info.code_sha256 == meta["code_sha256"] and info.description == "Wave the gripper."

    refused = tidybot_run("--save-skill", "wave")
    assert refused.returncode == 2 and "one FILE or --from ID" in refused.stderr
    missing = tidybot_run("--export-skill", "nothing", str(tmp_path))
    assert missing.returncode == 1 and "no skill named 'nothing'" in missing.stderr


def test_tidybot_run_replay_shows_the_diff_of_stdout(stack, lease):
    done = tidybot_run("-c", "import random\nprint('fixed')\nprint(random.random())\n", "--json",
                       "--lease-id", lease)
    original = json.loads(done.stdout)["execution_id"]
    again = tidybot_run("--replay", original, "--dry-run", "--lease-id", lease)
    assert again.returncode == 0, again.stderr
    assert f"--- {original} (original) stdout" in again.stderr
    assert " fixed\n" in again.stderr and "\n-0." in again.stderr and "\n+0." in again.stderr
    same = tidybot_run("-c", "print('same')", "--json", "--lease-id", lease)
    same_id = json.loads(same.stdout)["execution_id"]
    again = tidybot_run("--replay", same_id, "--lease-id", lease)
    assert f"stdout is the same as {same_id}'s (succeeded then, succeeded now)" in again.stderr
    unknown = tidybot_run("--replay", "ffffffffffff", "--lease-id", lease)
    assert unknown.returncode == 5 and "no finished execution" in unknown.stderr


def test_the_documented_example_skill_proves_itself_on_a_dry_run(stack, lease):
    """examples/skills/pick_cube.py (docs/skills.md) picks the default world's cube."""
    code = (ROOT / "examples" / "skills" / "pick_cube.py").read_text()
    reply = save(stack, lease, "pick_cube", code, dry_runs=1)
    assert reply.success, reply.message
    info = listed(stack, "pick_cube")[f"pick_cube@{reply.version}"]
    assert info.signature == "pick_cube(x: float=0.5, y: float=0.0, top: float=0.1) -> bool"


