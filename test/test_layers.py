"""The layers of DESIGN.md §10 hold: import-linter checks the contracts in .importlinter."""
from __future__ import annotations

import shutil
import subprocess

from support import ROOT


def test_import_contracts_are_kept():
    lint = shutil.which("lint-imports")
    assert lint, "import-linter is installed by tools/bootstrap.py"
    done = subprocess.run([lint, "--config", str(ROOT / ".importlinter"), "--no-cache"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
