"""Mutation testing of the core numerical modules with mutmut (``make mutation``; NOT part of ``make test``).

mutmut changes one thing at a time in the source (``+`` to ``-``, ``<`` to ``<=``, a constant to another) and
runs the tests that cover it; a mutant that no test notices ("survived") is a wrong answer the suite would
let through. Run it after changing a formula (CONTRIBUTING.md).

Each module runs in its own scratch copy of the repository, with mutmut's ``only_mutate`` narrowed to that
module and pytest restricted to the module's own test files (``[tool.convlens-mutation.tests]`` in
pyproject.toml), so one module takes minutes, not the whole suite per mutant. The base ``[tool.mutmut]``
settings in pyproject.toml apply to every run.

Usage::

    python tools/mutation.py                    # every core module (hours on 2 cores)
    python tools/mutation.py pyramid match      # some modules
    python tools/mutation.py --max-children 2 train
    python tools/mutation.py --results pyramid  # list the surviving mutants of the last run (with diffs: --diff)

Each run prints killed / survived / timeouts per module and the score ``killed / (killed + survived)``;
surviving mutants that are equivalent (no observable difference) are explained in docs/testing.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = Path(os.environ.get("CONVLENS_MUTATION_DIR", "/tmp/convlens-mutation"))


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def targets(module: str) -> list[str]:
    """The files mutated for ``module``: ``[tool.convlens-mutation.mutate]`` when set, else the package or module."""
    override = _config()["convlens-mutation"].get("mutate", {}).get(module)
    if override:
        return list(override)
    if (ROOT / "src" / "convlens" / module).is_dir():
        return [f"src/convlens/{module}/*"]
    return [f"src/convlens/{module}.py"]


def prepare(module: str, tests: list[str]) -> Path:
    """A scratch copy of src/, tests/ and pyproject.toml whose [tool.mutmut] targets ``module`` only."""
    work = SCRATCH / module
    if work.exists():
        # keep mutants/ (mutmut resumes and skips what it already decided), refresh the code under test
        for sub in ("src", "tests"):
            shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", text, re.S | re.M)
    if block is None:
        raise SystemExit("pyproject.toml has no [tool.mutmut] section.")
    settings = dict(_config()["mutmut"], only_mutate=targets(module), pytest_add_cli_args_test_selection=tests)
    lines = ["[tool.mutmut]"]
    for k, v in settings.items():
        lines.append(f"{k} = {_toml_list(v) if isinstance(v, list) else json.dumps(v)}")
    text = text[: block.start()] + "\n".join(lines) + "\n\n" + text[block.end() :]
    (work / "pyproject.toml").write_text(text)
    return work


def _mutmut_env() -> dict[str, str]:
    """The environment of every mutmut run: one torch thread per worker that does not spin, strict tracing, the
    fast hypothesis profile, and no PYTHONPATH (the scratch copy's mutated source must be the one imported)."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        OMP_WAIT_POLICY="PASSIVE",
        CONVLENS_STRICT_TRACE="1",
        CONVLENS_HYPOTHESIS_PROFILE="mutation",
    )
    env.pop("PYTHONPATH", None)
    return env


def run(module: str, tests: list[str], max_children: int) -> dict[str, int | float]:
    work = prepare(module, tests)
    env = _mutmut_env()
    globs = _config()["convlens-mutation"].get("functions", {}).get(module, [])  # mutant-name globs, if narrowed
    cmd = [str(Path(sys.executable).parent / "mutmut"), "run", "--max-children", str(max_children), *globs]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
    (work / "mutmut-run.log").write_text(proc.stdout + proc.stderr)
    first = verdicts(work, globs)
    # a batch run reported survivors that the same mutant, run alone, kills (seen with hypothesis tests under
    # parallel workers): every survivor is re-run alone before it counts
    recheck(work, env, max_children)
    c: dict[str, int | float] = dict(verdicts(work, globs), survived_first_pass=first["survived"])
    decided = c["killed"] + c["timeout"] + c["survived"] + c["suspicious"]
    c["score_percent"] = round(100 * (c["killed"] + c["timeout"]) / decided, 1) if decided else 0
    return c


def survivors(work: Path) -> list[str]:
    """Names of the mutants ``mutmut results`` lists as survived or as reached by no test (tests may have come since)."""
    mutmut = str(Path(sys.executable).parent / "mutmut")
    out = subprocess.run([mutmut, "results"], cwd=work, capture_output=True, text=True, check=False).stdout
    return re.findall(r"^\s*(\S+): (?:survived|no tests)", out, re.M)


def record(work: Path, codes: dict[str, int | None]) -> None:
    """Write ``codes`` (mutant name -> mutmut exit code, None = not run yet) into the part's records
    (``mutants/**/*.py.meta``); the recorded durations of those mutants are dropped with their old verdicts."""
    for meta in (work / "mutants").rglob("*.py.meta"):
        d = json.loads(meta.read_text())
        if codes.keys() & d.get("exit_code_by_key", {}).keys():
            d["exit_code_by_key"] = {k: codes.get(k, v) for k, v in d["exit_code_by_key"].items()}
            d["durations_by_key"] = {k: v for k, v in d.get("durations_by_key", {}).items() if k not in codes}
            meta.write_text(json.dumps(d))


def forget(work: Path, names: list[str]) -> None:
    """Mark the recorded verdicts of ``names`` as not yet run, so they run again.

    The key must stay (set to None): mutmut only knows the mutants listed there, and a deleted key is never re-run.
    """
    record(work, dict.fromkeys(names))


def recorded(work: Path, globs: list[str]) -> Iterator[tuple[str, int | None]]:
    """(mutant name, recorded mutmut exit code; None = not run yet) of the mutants matching ``globs`` (all when
    empty), from mutmut's meta files."""
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        for key, code in json.loads(meta.read_text()).get("exit_code_by_key", {}).items():
            if not globs or any(fnmatch.fnmatch(key, g) for g in globs):
                yield key, code


def verdicts(work: Path, globs: list[str]) -> dict[str, int]:
    """Counts of the recorded verdicts of the mutants matching ``globs`` (all when empty), from mutmut's meta files.

    The exit codes are read with mutmut's own table (``mutmut.stats.status_by_exit_code``; 3 is a kill too).
    """
    from mutmut.stats import status_by_exit_code

    rename = {"not checked": "not_run", "no tests": "no_tests", "segfault": "killed", "caught by type check": "killed"}
    c = {"killed": 0, "survived": 0, "timeout": 0, "suspicious": 0, "no_tests": 0, "skipped": 0, "not_run": 0}
    for _, code in recorded(work, globs):
        status = status_by_exit_code[code]
        status = rename.get(status, status)
        c[status if status in c else "suspicious"] += 1
    return c


def recheck(work: Path, env: dict[str, str], max_children: int = 2, alone: bool = True) -> list[str]:
    """Re-run every survivor against the current tests; returns the names that still survive.

    Survivors of a parallel pass are run once more alone (one worker) before they count, unless ``alone`` is False.
    """
    names = survivors(work)
    if names:
        # the tests may have grown since the mutants were made
        shutil.rmtree(work / "mutants" / "tests", ignore_errors=True)
        shutil.copytree(work / "tests", work / "mutants" / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    mutmut = str(Path(sys.executable).parent / "mutmut")
    for children in dict.fromkeys((max_children, 1) if alone else (max_children,)):
        if not names:
            break
        forget(work, names)
        subprocess.run([mutmut, "run", "--max-children", str(children), *names], cwd=work, env=env, check=False,
                       capture_output=True)  # fmt: skip
        names = survivors(work)
    return names


def results(module: str, diff: bool) -> None:
    work = SCRATCH / module
    mutmut = str(Path(sys.executable).parent / "mutmut")
    out = subprocess.run([mutmut, "results"], cwd=work, capture_output=True, text=True, check=False).stdout
    print(out)
    if diff:
        for name in re.findall(r"^\s*(\S+): survived", out, re.M):
            print(subprocess.run([mutmut, "show", name], cwd=work, capture_output=True, text=True).stdout)


def main(argv: list[str] | None = None) -> int:
    cfg = _config()
    table: dict[str, list[str]] = cfg["convlens-mutation"]["tests"]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", help=f"default: all of {', '.join(table)}")
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--results", action="store_true", help="list the survivors of the last run instead of running")
    ap.add_argument("--diff", action="store_true", help="with --results: show each survivor's diff")
    ap.add_argument("--recheck", action="store_true", help="re-run the last run's survivors against the current tests")
    ap.add_argument("--no-alone", action="store_true", help="with --recheck: skip re-running the survivors alone")
    a = ap.parse_args(argv)
    mods = a.modules or list(table)
    unknown = [m for m in mods if m not in table]
    if unknown:
        raise SystemExit(f"unknown module {unknown[0]!r}; core modules: {', '.join(table)}")
    if a.recheck:
        env = _mutmut_env()
        for m in mods:
            left = recheck(
                prepare(m, table[m]), env, a.max_children, alone=not a.no_alone
            )  # current tests and test selection
            print(f"{m}: {len(left)} survivors after recheck: {' '.join(left)}", flush=True)
        return 0
    if a.results:
        for m in mods:
            results(m, a.diff)
        return 0
    for m in mods:
        c = run(m, table[m], a.max_children)
        print(f"{m}: {json.dumps(c)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
