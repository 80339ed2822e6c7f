"""The layering in docs/architecture.md, enforced: a forbidden import fails the suite."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--config", str(ROOT / "pyproject.toml")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


def test_modules_stay_small():
    too_big = {str(p.relative_to(ROOT)): n for p in (ROOT / "src").rglob("*.py")
               if (n := len(p.read_text().splitlines())) > 600}
    assert not too_big, f"split these modules by responsibility: {too_big}"
