"""tidybot-run's skill commands and replay's diff: list, save, export and import skills
(docs/skills.md), and the old output beside the new one."""
from __future__ import annotations

import difflib
import json
import sys
import time
from pathlib import Path
from typing import Any

from tidybot_interfaces.msg import ExecutionRecord, SkillInfo

from tidybot_exec.clients import skill_folder
from tidybot_exec.clients.client import TidybotClient
from tidybot_exec.execution.records import Status

SKILL_FIELDS = ("name", "version", "description", "signature", "docstring", "code_sha256",
                "from_execution_id", "dry_runs_passed", "saved_by", "origin", "runs",
                "successes")


def skill_dict(info: SkillInfo) -> dict[str, Any]:
    """A SkillInfo as plain data (``saved`` in seconds since the epoch)."""
    return {**{f: getattr(info, f) for f in SKILL_FIELDS},
            "saved": info.saved.sec + info.saved.nanosec / 1e9}


def list_skills(client: TidybotClient, query: str, as_json: bool) -> int:
    skills = client.list_skills(query)
    if as_json:
        print(json.dumps([skill_dict(s) for s in skills]))
        return 0
    if not skills:
        print(f"no skills{f' match {query!r}' if query else ' yet'}", file=sys.stderr)
    for s in skills:
        saved = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.saved.sec))
        print(f"{s.name}@{s.version}  {s.signature}  {s.successes}/{s.runs} succeeded  "
              f"saved {saved} by {s.saved_by or '-'}\n    {s.description or '(no description)'}")
    return 0


def save_skill(client: TidybotClient, name: str, code: str, description: str,
               from_execution_id: str, dry_runs: int, origin: str = "") -> int:
    """0 when saved, 1 when refused (the reason on stderr)."""
    answer = client.save_skill(name, code, description, from_execution_id, dry_runs,
                               origin=origin)
    (sys.stdout if answer.success else sys.stderr).write(f"tidybot-run: {answer.message}\n")
    return 0 if answer.success else 1


def export_skill(client: TidybotClient, ref: str, directory: str, robot: str) -> int:
    """``NAME[@VERSION]`` into ``directory/NAME``: 0, or 1 when there is no such skill."""
    name, _, version = ref.partition("@")
    if version and not (version.isascii() and version.isdigit()):
        print(f"tidybot-run: {ref!r}: the version after @ must be a number", file=sys.stderr)
        return 2
    answer = client.get_skill(name, int(version or 0))
    if not answer.success:
        print(f"tidybot-run: {answer.message}", file=sys.stderr)
        return 1
    folder = skill_folder.write(Path(directory), {**skill_dict(answer.skill),
                                                  "exported_from": robot}, answer.code)
    print(f"tidybot-run: exported {name}@{answer.skill.version} to {folder}")
    return 0


def import_skill(client: TidybotClient, directory: str, dry_runs: int) -> int:
    try:
        folder = skill_folder.read(Path(directory))
    except (OSError, ValueError) as exc:
        print(f"tidybot-run: cannot import {directory}: {exc}", file=sys.stderr)
        return 2
    return save_skill(client, folder.name, folder.code, folder.description, "", dry_runs,
                      folder.origin)


def replay_diff(old: ExecutionRecord, new: ExecutionRecord | None) -> str:
    """The replay's stdout beside the original's: a unified diff of the two records' stdout
    tails (the history keeps the same last part of each), or a line saying they agree."""
    if new is None:
        return f"tidybot-run: the replay's record was not found: no diff with {old.execution_id}\n"
    if old.stdout_tail == new.stdout_tail:
        return (f"tidybot-run: stdout is the same as {old.execution_id}'s "
                f"({_word(old.status)} then, {_word(new.status)} now)\n")
    diff = difflib.unified_diff(old.stdout_tail.splitlines(keepends=True),
                                new.stdout_tail.splitlines(keepends=True),
                                fromfile=f"{old.execution_id} (original) stdout",
                                tofile=f"{new.execution_id} (replay) stdout")
    return "".join(line if line.endswith("\n") else line + "\n" for line in diff)


def _word(status: int) -> str:
    return Status(status).name.lower()
