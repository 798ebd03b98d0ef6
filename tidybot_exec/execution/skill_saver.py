"""Saving a skill: proven by dry runs before it is stored (no rclpy; DESIGN §11.3).

Beside the store (skills.py): the store keeps versions; the saver decides whether a version
may be kept — the lease, the provenance of its code, the checks, and dry runs of the module
as ``__main__``, each a goal of its own through the service (``run``), kept in the history as
the proof.
"""
from __future__ import annotations

from typing import Callable

from tidybot_exec.execution.dry_run import Seed
from tidybot_exec.execution.history import History
from tidybot_exec.execution.records import Request, Result, Status
from tidybot_exec.execution.skills import MAX_DRY_RUNS, Saved, SkillStore, check

Authorize = Callable[[str], tuple[str, str]]        # lease_id -> (holder, refusal)
Run = Callable[[Request, str], Result]              # (request, lease_id) -> its result


class SkillSaver:
    def __init__(self, store: SkillStore, history: History, authorize: Authorize, run: Run,
                 max_code_bytes: int, log: Callable[[str], None]) -> None:
        self._store, self._history, self._authorize, self._run = store, history, authorize, run
        self._max_code_bytes, self._log = max_code_bytes, log

    def save(self, lease_id: str, name: str, code: str = "", description: str = "",
             from_execution_id: str = "", dry_runs: int = 0, seed: Callable[[], Seed] = Seed,
             origin: str = "") -> Saved:
        """A new version of ``name``, from ``code`` or the code of the SUCCEEDED execution
        ``from_execution_id``, saved only after ``dry_runs`` dry runs of the module as
        ``__main__`` (each from ``seed()``, the live state) all succeeded — a run with a
        guard refusal does not succeed. Needs the lease: writing the store is the holder's,
        and the dry runs take the robot's one slot like any goal."""
        holder, refusal = self._authorize(lease_id)
        if refusal:
            return Saved(False, refusal)
        if from_execution_id:
            record = self._history.get(from_execution_id)
            if record is None:
                return Saved(False, f"no finished execution {from_execution_id!r} in the history")
            if record.status != Status.SUCCEEDED:
                return Saved(False, f"execution {from_execution_id} ended "
                                    f"{Status(record.status).name}: only code that succeeded is saved")
            if code and code != record.code:
                return Saved(False, "give code or from_execution_id, not both: they differ")
            code = record.code
        parsed = check(name, code, description, self._max_code_bytes)
        if isinstance(parsed, str):
            return Saved(False, parsed)
        if not 0 <= dry_runs <= MAX_DRY_RUNS:
            return Saved(False, f"dry_runs must be 0..{MAX_DRY_RUNS}, got {dry_runs}")
        if dry_runs and not parsed.demonstrated:
            return Saved(False, 'dry runs run the module\'s `if __name__ == "__main__":` block, '
                                "and it has none: add one that shows the skill working")
        proofs = []
        for k in range(1, dry_runs + 1):
            result = self._run(Request(code, label=f"skill {name}: dry run {k}/{dry_runs}",
                                      dry_run=seed()), lease_id)
            if result.status != Status.SUCCEEDED:
                return Saved(False, f"not saved: dry run {k} of {dry_runs} (execution "
                                    f"{result.execution_id}) {result.status.name}: "
                                    f"{result.error or 'no error given'}", dry_runs_passed=k - 1)
            proofs.append(result.execution_id)
        if self._authorize(lease_id)[1]:
            return Saved(False, f"not saved: the lease ended during the dry runs "
                                f"({', '.join(proofs)})", dry_runs_passed=dry_runs)
        skill = self._store.save(name, code, parsed, description, from_execution_id, dry_runs,
                                 holder, origin)
        self._log(f"skill {skill.ref} saved by {holder or 'anyone'}"
                  + (f" after dry runs {', '.join(proofs)}" if proofs else ""))
        return Saved(True, f"saved {skill.ref}" + (f" after {dry_runs} dry run(s): "
                                                   f"{', '.join(proofs)}" if proofs else ""),
                     skill.version, dry_runs)
