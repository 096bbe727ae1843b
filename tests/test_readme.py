"""The first ten minutes of a new user: the README's quick start and Python blocks, run as written in a fresh copy of
the repository with no data beside it, and `--help` that shows every default."""
import argparse
import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import train

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def readme_blocks(language):
    return [code for lang, code in BLOCK.findall((REPO / "README.md").read_text(encoding="utf-8")) if lang == language]


def quick_start_lines():
    """The README's first ```bash block, line by line (the quick start: set-up, main job, tests)."""
    return [line for line in readme_blocks("bash")[0].splitlines() if line.strip() and not line.startswith("#")]


def fresh_copy(destination):
    """What a clone of this working tree holds once committed: the files git tracks or would track (.gitignore
    respected, so an ignored sample or a file someone forgot to add is missing here as it would be for a user)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: cannot tell which files a clone would have")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree stays deleted
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def installed_modules():
    """The import names of what the set-up line installs: pyproject's dependencies and its xla and test extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    names = [re.split(r"[<>=\[ ]", spec)[0] for spec in project["dependencies"] + extras["xla"] + extras["test"]]
    return sorted({{"scikit-learn": "sklearn"}.get(name, name) for name in names})


FIND_MODULES = ("import importlib.util, sys; missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]; "
                "print('not installed:', *missing, file=sys.stderr) if missing else None; sys.exit(1 if missing else 0)")


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory):
    """A fresh copy with no ../shared beside it, after the README's quick-start lines ran exactly as written: the
    set-up line is replaced by a check that what it installs is there, the `pytest` line is left out (this is it)."""
    clone = fresh_copy(tmp_path_factory.mktemp("fresh") / "electramed")
    assert not (clone.parent / "shared").exists()
    env = {k: v for k, v in os.environ.items() if k not in ("PJRT_DEVICE", "XLA_FLAGS", "CPU_NUM_DEVICES")}
    env.update(ELECTRAMED_DATA=str(clone.parent / "no-data-here"), PYTHONPATH="",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    results = []
    for line in quick_start_lines():
        command = line.split("#")[0].strip()
        if command.startswith(("pytest", "python -m pytest")):
            continue
        if "pip install" in command:  # found where the quick start's python looks (importing them all: 5 s more)
            command = f"python -c {FIND_MODULES!r} {' '.join(installed_modules())}"
        start = time.perf_counter()
        done = subprocess.run(["bash", "-c", line if "pip install" not in line else command], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=1200)
        results.append((line, done, time.perf_counter() - start))
        print(f"{time.perf_counter() - start:.0f} s: {line}")  # the timing, shown with -s; never asserted
    return clone, env, results


@pytest.mark.slow
def test_the_quick_start_runs_as_written_in_a_fresh_clone_without_data(quick_start):
    clone, _, results = quick_start
    assert [line for line, _, _ in results if "pretrain" in line], "the quick start has no pretrain line"
    for line, done, _ in results:
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
    line, done, _ = next(r for r in results if "pretrain" in r[0])
    printed = done.stdout.strip().splitlines()
    # what it says along the way: the sample, the XLA CPU fallback in our words (torch_xla's bare warning silenced)
    assert any(p.startswith("no --corpus: using the bundled sample of 500 PubMed abstracts") for p in printed)
    if "--device xla" in line and "PJRT_DEVICE" not in line:
        assert sum(p.startswith("--device xla: PJRT_DEVICE is not set") for p in printed) == 1
        assert "Defaulting to PJRT_DEVICE" not in done.stderr
    # it ends with the run in one line, then where the HuggingFace-format model is
    assert re.match(r"step \d+ \(mean of the last \d+ steps?\): loss \d+\.\d+; generator loss", printed[-2]), printed
    model_dir = clone / printed[-1].rsplit(" in ", 1)[1]
    assert printed[-1].startswith("done: ") and (model_dir / "discriminator" / "config.json").is_file()


@pytest.mark.slow
def test_the_readme_python_blocks_run_as_written(quick_start):
    clone, env, results = quick_start
    assert all(done.returncode == 0 for _, done, _ in results), "the quick start failed: see the test above"
    blocks = readme_blocks("python")
    assert blocks
    for block in blocks:
        done = subprocess.run([sys.executable, "-"], input=block, cwd=clone, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"README python block failed:\n{block}\n{done.stderr[-3000:]}"
    # what the quick start and the blocks write stays out of the repository: every file they made is one git ignores
    copied = set(subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True).stdout.decode().split("\0"))
    made = [str(path.relative_to(clone)) for path in clone.rglob("*") if path.is_file()]
    made = [name for name in made if name not in copied]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin", "-z"], cwd=REPO, input="\0".join(made),
                             capture_output=True, text=True).stdout.split("\0")
    assert made and set(made) <= set(ignored), sorted(set(made) - set(ignored))


def test_help_shows_every_default_and_each_subcommand_says_what_it_does():
    parser = train.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in subparsers.choices.items():
        assert subparser.description, f"{name} --help has no description"
        formatter = subparser._get_formatter()
        for action in subparser._actions:
            if action.option_strings and action.dest != "help":
                text = formatter._get_help_string(action)
                assert "default" in text.lower() or text.endswith("(required)"), f"{name} {action.option_strings}"
    pretrain_help = subparsers.choices["pretrain"].format_help()
    assert "(default: the preset's value)" in " ".join(pretrain_help.split())  # --learning-rate, --batch-size ...
    prepare_help = " ".join(subparsers.choices["prepare"].format_help().split())
    assert "token-per-line) (required)" in prepare_help  # --corpus is required for prepare, not for pretrain


def test_mutmut_command_names_functions_that_exist():
    """Each pattern of the README's mutmut command matches a function or method of its module, under mutmut's
    mangling (`x_name`, `xǁClassǁmethod`): a renamed function would otherwise drop out of the run silently."""
    commands = [code for code in readme_blocks("bash") if "mutmut run" in code]
    patterns = [pattern for command in commands for pattern in re.findall(r'"(\w+)\.(x[^"]*)"', command)]
    assert len(commands) == 2 and len(patterns) >= 30  # the pre-training core, then the fine-tuning core
    for module, pattern in patterns:
        tree = ast.parse((REPO / f"{module}.py").read_text(encoding="utf-8"))
        names = [f"x_{node.name}" for node in tree.body if isinstance(node, ast.FunctionDef)]
        names += [f"xǁ{node.name}ǁ{method.name}" for node in tree.body if isinstance(node, ast.ClassDef)
                  for method in node.body if isinstance(method, ast.FunctionDef)]
        assert any(fnmatch.fnmatchcase(f"{name}__mutmut_1", pattern) for name in names), f"{module}.{pattern}"


def test_slow_tests_skip_with_their_reason_unless_slow_is_given_or_ci_is_true(pytester, monkeypatch):
    """tests/conftest.py: `pytest` skips what is marked slow, saying how to run it; `pytest --slow` and CI=true run it
    (were CI to skip them, the quick start and the XLA, torchrun and benchmark runs would never be checked), and under
    CI=true any other skip, such as a missing test dependency, is a failure. Checked in a throwaway project that uses
    that conftest (pytester, in this process)."""
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_marks="import pytest\n\n@pytest.mark.slow\ndef test_end_to_end(): pass\n\n"
                                   "def test_unit(): pass\n\n"
                                   "def test_reference(): pytest.importorskip('a_module_that_is_not_installed')\n")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the installed plugins take 1 s a run to load
    run = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    run.assert_outcomes(passed=1, skipped=2)
    run.stdout.fnmatch_lines(["*test_marks.py:3: slow end-to-end run: `pytest --slow` runs it (and CI=true does)"])
    pytester.runpytest("--slow", "-p", "no:cacheprovider").assert_outcomes(passed=2, skipped=1)
    monkeypatch.setenv("CI", "true")
    run = pytester.runpytest("-p", "no:cacheprovider")
    run.assert_outcomes(passed=2, failed=1)
    run.stdout.fnmatch_lines(["*skipped under CI=true, where every test must run: *a_module_that_is_not_installed*"])


@pytest.mark.slow
def test_mutant_runs_take_the_fastest_tests_first_with_the_inherited_heap_frozen(tmp_path):
    """tests/conftest.py, under mutmut (MUTANT_UNDER_TEST set): a mutant's tests run in the order of mutmut's recorded
    durations, whatever order they were named in, and the garbage collector's inherited heap is frozen; an ordinary
    run keeps file order and the collector as it is. Checked in a throwaway project that uses that conftest."""
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_order.py").write_text("import gc\n\ndef test_slow(): pass\n\ndef test_fast(): pass\n\n"
                                            "def test_medium(): assert gc.get_freeze_count() > 0\n")
    (tmp_path / "mutmut-stats.json").write_text(json.dumps({"duration_by_test": {
        "test_order.py::test_slow": 30.0, "test_order.py::test_fast": 0.1, "test_order.py::test_medium": 1.0}}))

    def run(**env):
        done = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "test_order.py"],
                              cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
        return re.findall(r"::(test_\w+) (PASSED|FAILED)", done.stdout)

    assert run(MUTANT_UNDER_TEST="runtime.x_step_seed__mutmut_1") == [
        ("test_fast", "PASSED"), ("test_medium", "PASSED"), ("test_slow", "PASSED")]
    assert run(MUTANT_UNDER_TEST="") == [("test_slow", "PASSED"), ("test_fast", "PASSED"), ("test_medium", "FAILED")]
