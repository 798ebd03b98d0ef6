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


def test_every_module_of_the_node_lives_in_a_checked_package():
    """A module added at the top of tidybot_exec would escape the package contracts: every
    module lives in execution/, sandbox/, guard/, cameras/, ros/, clients/ or sim/ (the top holds only
    the package marker and the documented ``tidybot_exec.client`` re-export)."""
    import configparser

    top = sorted(p.name for p in (ROOT / "tidybot_exec").iterdir()
                 if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
    assert top == ["__init__.py", "base_bridge", "cameras", "client.py", "clients", "execution",
                   "guard", "ros", "sandbox", "sim"], top
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    named = " ".join(config[s].get("layers", "") + config[s].get("source_modules", "")
                     for s in config.sections())
    for package in ("base_bridge", "cameras", "clients", "execution", "guard", "ros", "sandbox",
                    "sim"):
        assert f"tidybot_exec.{package}" in named, package
