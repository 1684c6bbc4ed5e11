"""The README's quick start and generated settings table stay true."""

import subprocess
import sys

from tests.conftest import REPO


def test_settings_table_in_readme_is_current():
    result = subprocess.run([sys.executable, "scripts/update_readme.py", "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_quick_start_is_the_two_make_targets_ci_runs():
    readme = (REPO / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick_start and "make test" in quick_start
    assert "make test" in (REPO / ".ci" / "run").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert "\ndemo: setup" in makefile and "\ntest: setup" in makefile
