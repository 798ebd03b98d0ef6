"""A skill as a folder, the layout the TidyBot team keeps its skills in (no rclpy):

    NAME/
      README.md     # "# NAME", the description, the signature and docstring
      main.py       # the module: the function and its __main__ demonstration
      skill.json    # version, provenance and statistics where it was exported

so skills move between robots and into git. Importing a folder saves its ``main.py`` as
a new version on this robot, with skill.json's description (a folder without one: the
README's text under its title); where it came from (robot, version, record there) goes
into the new version's ``origin`` — provenance cannot be checked across robots, so it is
kept as text, and a ``main.py`` changed since the export says so.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

README, CODE, META = "README.md", "main.py", "skill.json"


@dataclass(frozen=True)
class Folder:
    """What an import saves."""

    name: str
    description: str
    code: str
    origin: str


def write(directory: Path, info: dict[str, Any], code: str) -> Path:
    """Write skill ``info`` (SkillInfo's fields, plus ``exported_from``) and its code into
    ``directory/NAME``; returns that folder."""
    folder = Path(directory) / info["name"]
    folder.mkdir(parents=True, exist_ok=True)
    readme = [f"# {info['name']}", "", info["description"] or "(no description)", "",
              "## Signature", "", "```python", info["signature"], "```", ""]
    if info.get("docstring"):
        readme += ["## Docstring", "", "```text", info["docstring"].strip(), "```", ""]
    readme += ["## Record", "",
               f"Version {info['version']} on {info.get('exported_from') or 'its robot'}: "
               f"{info['successes']} of {info['runs']} executions that imported it succeeded"
               + (f"; saved from execution {info['from_execution_id']}"
                  if info["from_execution_id"] else "")
               + (f"; proven on {info['dry_runs_passed']} dry run(s)"
                  if info["dry_runs_passed"] else "") + ".", ""]
    (folder / README).write_text("\n".join(readme), encoding="utf-8")
    (folder / CODE).write_text(code, encoding="utf-8")
    (folder / META).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def read(folder: Path) -> Folder:
    """The skill in ``folder`` (raises OSError or ValueError saying what is wrong)."""
    folder = Path(folder)
    code = (folder / CODE).read_text(encoding="utf-8-sig")
    meta = json.loads((folder / META).read_text(encoding="utf-8")) if (folder / META).exists() else {}
    if not isinstance(meta, dict):
        raise ValueError(f"{folder / META} is not a JSON object")
    name = str(meta.get("name") or folder.name)
    description = meta.get("description")
    if not isinstance(description, str):        # a folder written by hand: the README's
        description = ""                        # text between the title and the first ##
        if (folder / README).exists():
            text = (folder / README).read_text(encoding="utf-8-sig")
            body = re.split(r"^## ", re.sub(r"\A# .*\n", "", text), maxsplit=1, flags=re.M)[0]
            description = "" if body.strip() == "(no description)" else body.strip()
    origin = f"imported from {folder.name}/"
    if meta:
        origin += (f": {name}@{meta.get('version', '?')} on "
                   f"{meta.get('exported_from') or 'another robot'}, "
                   f"{meta.get('successes', 0)} of {meta.get('runs', 0)} runs succeeded there"
                   + (f", saved there from execution {meta['from_execution_id']}"
                      if meta.get("from_execution_id") else ""))
        if meta.get("code_sha256") and meta["code_sha256"] != hashlib.sha256(
                code.encode("utf-8", "surrogatepass")).hexdigest():
            origin += f"; {CODE} was changed since the export"
    return Folder(name, description, code, origin)
