"""The CLI answers at once: a verb imports only what it needs (no pydantic models, rich or PyYAML for a plain
`get`), and `--help` lists every verb without importing them. Figures: benchmarks/cli_startup.py."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest
import yaml

from shipyard.cli.main import VERBS, load_verb, main_exit_code, verb_help
from shipyard.resources import TrainingJob
from tests.unit.test_client_cli import JOB, server, store  # noqa: F401 - fixtures

# typer too: the common verbs run on cli/fast.py's parser (typer alone costs ~90 ms of CPU to import).
HEAVY = ("pydantic", "rich", "yaml", "shipyard.resources.base", "shipyard.compiler", "h2", "typer",
         "httpx", "httpcore", "anyio", "dataclasses", "ssl")
PROBE = """
import json, sys
from shipyard.cli.main import main_exit_code
code = main_exit_code(sys.argv[1:])
print(json.dumps([m for m, v in sys.modules.items() if v is not None]), file=sys.stderr)
"""


def loaded_by(*argv: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)
    return set(json.loads(proc.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [["get", "tj"], ["get", "tj", "-l", "a=b", "--sort-by", ".status.phase"],
                                  ["describe", "tj", "a"], ["delete", "tj/a"], ["--help"], ["version"],
                                  ["logs", "tj/a"]])
def test_common_verbs_import_nothing_heavy(argv, store):
    store.apply([TrainingJob.model_validate(yaml.safe_load(JOB.format(name="a")))])  # answered, not failed
    modules = loaded_by(*argv)
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)
    assert not heavy, f"shipyard {' '.join(argv)} imported {heavy[:8]}"
    others = {m for m in modules if m.startswith("shipyard.cli.")} - {
        "shipyard.cli.main", "shipyard.cli.common", "shipyard.cli.params", "shipyard.cli.printers",
        "shipyard.cli.fast", "shipyard.cli._typer"}
    assert len(others) <= 1, f"verbs imported besides the one run: {sorted(others)}"


def test_apply_reads_manifests_without_the_models(store, tmp_path):
    """The control plane validates what apply sends; the CLI needs PyYAML to read it and nothing heavier."""
    manifest = tmp_path / "job.yaml"
    manifest.write_text(JOB.format(name="b"))
    modules = loaded_by("apply", "-f", str(manifest))
    heavy = sorted(m for m in modules if (m.split(".")[0] in HEAVY or m in HEAVY) and m.split(".")[0] != "yaml")
    assert not heavy, f"shipyard apply imported {heavy[:8]}"
    assert store.get("TrainingJob", "default", "b") is not None


def test_help_lists_every_verb_with_its_own_help(capsys):
    assert main_exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    for name in VERBS:
        target = load_verb(name)
        doc = target.info.help if hasattr(target, "info") else inspect.getdoc(target)
        assert verb_help(name) == doc.splitlines()[0], f"{name}: --help would not show its docstring"
        assert any(line.split()[:1] == [name] for line in out.splitlines()), name


def test_options_are_still_checked_without_pydantic(capsys):
    assert main_exit_code(["logs", "tj/a", "--tail", "-1"]) == 2
    assert "greater than or equal to 0" in capsys.readouterr().err
    assert main_exit_code(["up", "--port", "x"]) == 2
    assert "valid integer" in capsys.readouterr().err


def test_describe_prints_specs_as_yaml_without_pyyaml():
    """`describe` writes specs with printers.block_yaml; whatever it prints must read back as the same data."""
    from pathlib import Path

    from shipyard.cli.printers import block_yaml

    root = Path(__file__).resolve().parents[2] / "examples"
    specs = [doc["spec"] for path in sorted(root.rglob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]
    specs.append({"odd": ["true", "1e-3", "a: b", "#x", "", None, 1.5, [], {}, [[1]], {"k": "y"}]})
    for spec in specs:
        assert yaml.safe_load("\n".join(block_yaml(spec))) == spec
