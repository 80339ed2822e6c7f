"""cli/fast.py runs the common verbs without typer; these tests fail when it and typer drift apart: its option
declarations against the click commands typer builds from the verbs' signatures, the calls both paths make for
the same command line, the top-level help byte for byte, and typer keeping every usage error."""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import subprocess
import sys

import pytest

from shipyard.cli import fast, main
from shipyard.cli.common import CURRENT_STATE, State
from shipyard.cli.main import VERBS, main_exit_code


def _typer_command(verb: str):
    """The click command typer builds for `verb`, as main's LazyGroup builds it."""
    import typer.main

    main.typer_app()  # installs cli/params.py's conversion, as a real run does
    return typer.main.get_command_from_info(typer.models.CommandInfo(name=verb, callback=main.load_verb(verb)),
                                            pretty_exceptions_short=False, rich_markup_mode=None)


def _described(param) -> tuple:
    """What parsing depends on, for a click parameter of typer's."""
    annotation = param.type_descriptor.annotation
    return (param.param_type_name, param.name, list(param.opts), list(param.secondary_opts),
            getattr(param, "is_flag", False), getattr(param, "count", False), param.multiple, param.nargs,
            annotation, param.min, param.max, param.required, param.envvar, param.default)


def _declared(param: fast.Opt | fast.Arg) -> tuple:
    """The same, for fast.py's declaration."""
    if isinstance(param, fast.Arg):
        return ("argument", param.dest, [param.dest], [], False, False, False, 1, str, None, None, param.required,
                None, None)
    return ("option", param.dest, list(param.opts), [], param.kind is bool, False, param.multiple, 1,
            list[str] if param.multiple else param.kind, param.low, None, param.required, param.envvar,
            param.default)


@pytest.mark.parametrize("verb", sorted(fast.FAST_VERBS))
def test_fast_declarations_match_the_typer_signatures(verb):
    assert verb in VERBS
    command = _typer_command(verb)
    assert [_described(p) for p in command.params] == [_declared(p) for p in fast.FAST_VERBS[verb]]
    assert command.context_settings.get("ignore_unknown_options") is not True
    parameters = list(inspect.signature(main.load_verb(verb)).parameters)
    assert ("ctx" in parameters) == (verb not in fast.NO_CTX)
    assert [p for p in parameters if p != "ctx"] == [p.dest for p in fast.FAST_VERBS[verb]]


def test_global_options_match_the_typer_callback():
    import typer.main

    group = typer.main.get_group(main.typer_app())
    assert [_described(p) for p in group.params] == [_declared(p) for p in fast.GLOBAL]
    assert group.allow_interspersed_args is False and group.no_args_is_help
    assert group.context_settings["help_option_names"] == list(fast._HELP)


@pytest.fixture
def typer_only(monkeypatch):
    """main_exit_code with the fast path switched off: typer runs every command line, as before it."""
    def run(argv: list[str]) -> int:
        with monkeypatch.context() as m:
            m.setattr(fast, "run_fast", lambda argv: None)
            return main_exit_code(argv)
    return run


@pytest.mark.parametrize("columns", ["40", "72", "80", "200"])
def test_top_level_help_is_typers_byte_for_byte(columns, monkeypatch, capsys, typer_only):
    monkeypatch.setenv("COLUMNS", columns)
    for argv, code in ((["--help"], 0), (["-h"], 0), ([], 2)):
        assert typer_only(argv) == code
        expected = capsys.readouterr()
        assert fast.run_fast(argv) == code, "the fast path did not answer"
        got = capsys.readouterr()
        assert (got.out, got.err) == (expected.out, expected.err), argv
        assert main_exit_code(argv) == code
        assert capsys.readouterr() == got


@pytest.fixture
def recorded(monkeypatch):
    """Each fast verb replaced by a stand-in with its signature (so typer builds the same command) that records
    the keyword arguments it is called with; a fresh typer app, so none keeps the real functions."""
    calls: list[tuple[str, dict]] = []
    for verb in fast.FAST_VERBS:
        module_name, attr = VERBS[verb]
        module = importlib.import_module(module_name)
        real = getattr(module, attr)

        def record(*args, __verb=verb, **kwargs):
            assert not args
            ctx = kwargs.pop("ctx", None)
            seen = {**kwargs, "state": CURRENT_STATE.get()._asdict()}
            if ctx is not None:
                seen["ctx.find_object"] = ctx.find_object(State)._asdict()
            calls.append((__verb, seen))

        monkeypatch.setattr(module, attr, functools.wraps(real)(record))
    monkeypatch.setattr(main, "_APP", [])
    return calls


SAME = [
    ["get", "tj"],
    ["get", "tj/a", "-o", "yaml"],
    ["get", "tj", "-l", "a=b", "--sort-by", ".status.phase", "-wA"],
    ["get", "--output=wide", "tj", "--all-projects", "--watch", "-l", "x in (a,b)"],
    ["get", "tj", "-o", "-w"],  # click takes the next word as the value, dash or not
    ["get", "tj", "a", "-owide", "-o", "json"],  # repeated: the last one
    ["-p", "x", "get", "tj", "-p", "y"],
    ["--project=x", "--context", "c", "--kubeconfig=k", "describe", "tj", "a"],
    ["-px", "describe", "tj/a", "--project", ""],
    ["logs", "tj/a", "-r", "1", "--tail=5", "--trial", "0", "-pf", "--since", "10m", "--all", "-l", "x=y",
     "--pod", "p0"],
    ["logs", "tj", "a", "-r3", "--tail", "007"],
    ["logs", "tj/a", "--previous", "--follow", "--selector=a!=b", "--project", "q"],
    ["apply", "-f", "a.yaml", "-f", "b.yaml", "--wait", "--timeout", "2.5", "--dry-run", "-p", "x"],
    ["apply", "-fa.yaml", "--timeout=3", "--filename", "-"],
    ["apply", "--timeout", ".5", "-f", "x"],
    ["delete", "tj/a", "--ignore-not-found", "--wait", "--timeout", "0"],
    ["delete"],
    ["delete", "-f", "x.yaml", "-f", "y.yaml", "-l", "a=b"],
    ["delete", "tj", "a", "-p", "z", "--selector", "k"],
    ["version"],
    ["--context", "kind-a", "version"],
    ["get", "", ""],
]


@pytest.mark.parametrize("argv", SAME, ids=[" ".join(a) or "(empty)" for a in SAME])
@pytest.mark.parametrize("env", [{}, {"SHIPYARD_PROJECT": "env-p", "SHIPYARD_CONTEXT": "env-c",
                                     "SHIPYARD_KUBECONFIG": "/k"}, {"SHIPYARD_PROJECT": ""}])
def test_the_same_command_line_makes_the_same_call(argv, env, recorded, monkeypatch, typer_only):
    for name in ("SHIPYARD_PROJECT", "SHIPYARD_CONTEXT", "SHIPYARD_KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert "-h" not in argv
    assert fast.run_fast(argv) == 0, "the fast path did not take it"
    assert typer_only(argv) == 0
    assert len(recorded) == 2
    (fast_verb, fast_call), (typer_verb, typer_call) = recorded
    assert fast_verb == typer_verb == argv[next(i for i, a in enumerate(argv) if a in fast.FAST_VERBS)]
    assert fast_call == typer_call


UNSURE = [
    ["get"], ["get", "tj", "-h"], ["get", "tj", "--help"], ["get", "tj", "--bogus"], ["get", "tj", "-x"],
    ["get", "tj", "-wx"], ["get", "a", "b", "c"], ["get", "tj", "--", "a"], ["get", "tj", "-o"],
    ["get", "tj", "-o=yaml"], ["get", "tj", "--watch=1"], ["get", "tj", "--sel", "a"],
    ["logs", "tj/a", "--tail", "-1"], ["logs", "tj/a", "--tail", "x"], ["logs", "tj/a", "--tail", "+1"],
    ["logs", "tj/a", "--tail", " 1"], ["logs", "tj/a", "--tail", "1.0"], ["logs", "tj/a", "-r", "١"],
    ["apply"], ["apply", "-f", "x", "--timeout", "1e3"], ["apply", "-f", "x", "--timeout", "."],
    ["apply", "-f", "x", "--timeout", "-1"], ["version", "x"], ["version", "--project", "p"],
    ["scale", "endpoint/a", "2"], ["up"], ["token", "list"], ["apikey", "list"], ["-p"], ["-p", "x"], ["--bogus", "get", "tj"],
    ["--help", "get"], ["-p", "x", "--help"], ["widgets"], ["-p", "x", "-h", "get", "tj"],
]


@pytest.mark.parametrize("argv", UNSURE, ids=[" ".join(a) for a in UNSURE])
def test_anything_uncertain_is_left_to_typer(argv, recorded):
    assert fast.run_fast(argv) is None
    assert recorded == []


@pytest.mark.parametrize("argv, words", [
    (["get", "tj", "--bogus"], "No such option: --bogus"),
    (["get"], "Missing argument 'KIND[/NAME]'"),
    (["get", "a", "b", "c"], "unexpected extra argument(s) (c)"),
    (["logs", "tj/a", "--tail", "-1"], "greater than or equal to 0"),
    (["apply"], "Missing option '--filename'"),
    (["get", "tj", "-o"], "Option '-o' requires an argument"),
])
def test_usage_errors_are_still_typers(argv, words, capsys):
    assert main_exit_code(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and words in err, err


def test_per_verb_help_is_still_typers(capsys):
    assert main_exit_code(["get", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: shipyard get [OPTIONS]") and "--sort-by" in out


PROBE = """
import json, sys
from shipyard.cli.main import main_exit_code
codes = [main_exit_code(argv) for argv in json.loads(sys.argv[1])]
print(json.dumps({"codes": codes, "typer": sorted(m for m in sys.modules if m.split(".")[0] == "typer")}))
"""


def test_common_verbs_run_without_importing_typer(tmp_path):
    """Against no control plane at all: each verb fails with its one-line error, and typer is never loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env["SHIPYARD_HOME"] = str(tmp_path)
    argvs = [["version"], ["get", "tj"], ["describe", "tj", "a"], ["logs", "tj/a"], ["delete", "tj/a"],
             ["get", "widgets"], ["--help"], []]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs)], capture_output=True, text=True,
                          env=env, timeout=120)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["typer"] == [], proc.stderr
    assert result["codes"] == [0, 1, 1, 1, 1, 1, 0, 2]
    assert [line for line in proc.stderr.splitlines() if line.startswith("error: ")][:1] == [
        "error: no Shipyard control plane is running (start one with `shipyard up`)"]
