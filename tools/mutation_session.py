"""Run a part's mutants in ONE pytest session: the fast path of ``tools/mutation.py`` on a 2-core machine.

mutmut runs every mutant in a fresh worker that imports torch and collects the test files again: for parts
whose tests build real models (inspect-fields) that costs about a minute per mutant per worker. This runner
keeps one pytest session, collects the tests once, and for each mutant sets ``MUTANT_UNDER_TEST`` (the switch
mutmut's own trampolines read on every call) and runs the same tests mutmut would run for it
(``tests_by_mangled_function_name`` in ``mutants/mutmut-stats.json``, fastest first, stopping at the first
failure). Session-scoped fixtures (loaded models) are kept between mutants.

Guard against one mutant leaking into the next (a mutant that changes a cached model in place would make the
following ones fail, i.e. look killed): every 25 mutants the baseline (no mutant, all those tests) runs again;
if it fails, the verdicts since the last good baseline are dropped and the run stops (run it again: it resumes).
Verdicts are written into mutmut's own records (``mutants/**/*.py.meta``: 1 killed, 0 survived, 36 timeout),
so ``tools/mutation.py --results`` and the scores read them like mutmut's.

Prerequisite: ``tools/mutation.py PART`` has made the part's scratch copy, mutants and test map once (it may
be stopped after its first mutants). ``--refresh`` first updates the scratch copy's source, tests and mutants,
and adds tests written since to the test map (mutmut's incremental stats, kept together with the earlier map).

Usage::

    python tools/mutation_session.py --refresh inspect-fields            # the mutants not run yet
    python tools/mutation_session.py --survivors inspect-fields          # re-run the survivors (new tests)
    python tools/mutation_session.py --shard 0/2 inspect-fields &        # two processes on two cores
    python tools/mutation_session.py --shard 1/2 inspect-fields       # (start the shards together)
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mutation  # noqa: E402  (tools/mutation.py: scratch layout, settings, environment)

BATCH = 25
CODES = {"killed": 1, "survived": 0, "timeout": 36}


def refresh(part: str) -> None:
    """Scratch source/tests from the repository, mutants of changed functions regenerated, new tests mapped."""
    table = mutation._config()["convlens-mutation"]["tests"]
    work = mutation.prepare(part, table[part])
    stats = work / "mutants" / "mutmut-stats.json"
    before = json.loads(stats.read_text())
    code = (
        "from pathlib import Path\n"
        "from mutmut.__main__ import (copy_also_copy_files, setup_source_paths, collect_or_load_stats,\n"
        "    get_mutant_runner, create_mutants_for_file)\n"
        "from mutmut.mutation.trampoline import set_mutant_under_test\n"
        "from mutmut.configuration import config\n"
        "set_mutant_under_test('mutant_generation')\n"
        "for pattern in config().only_mutate:\n"
        "    for f in sorted(Path('.').glob(pattern)):\n"
        "        if f.suffix == '.py':\n"
        "            create_mutants_for_file(f, Path('mutants') / f)\n"
        "copy_also_copy_files()\n"
        "setup_source_paths()\n"
        "collect_or_load_stats(get_mutant_runner(1), invalidate_stale_callers=False)\n"
    )
    # mutmut copies the modules it does not mutate into mutants/ once, at the first run: bring them up to date
    targets = mutation.targets(part)
    for f in (work / "src").rglob("*"):
        rel = f.relative_to(work)
        if f.is_file() and "__pycache__" not in rel.parts and not any(fnmatch.fnmatch(str(rel), t) for t in targets):
            dst = work / "mutants" / rel
            if not dst.exists() or dst.read_bytes() != f.read_bytes():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dst)
    subprocess.run([sys.executable, "-c", code], cwd=work, env=mutation._mutmut_env(), check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    # mutmut's incremental pass maps only the new tests and forgets older ones of functions that changed:
    # keep the union (a test that reached a function still reaches it)
    after = json.loads(stats.read_text())
    old, new = before["tests_by_mangled_function_name"], after["tests_by_mangled_function_name"]
    after["tests_by_mangled_function_name"] = {
        k: sorted(set(old.get(k, [])) | set(new.get(k, []))) for k in {*old, *new}
    }
    after["duration_by_test"] = {**before["duration_by_test"], **after["duration_by_test"]}
    stats.write_text(json.dumps(after))


def _record(mutants: Path, verdicts: dict[str, str]) -> None:
    import fcntl

    with open(mutants / ".session.lock", "w") as lock:  # shards write the same records: one at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        mutation.record(mutants.parent, {k: CODES[v] for k, v in verdicts.items()})


class _Session:
    """pytest plugin: replaces the test loop by the loop over mutants."""

    def __init__(
        self,
        names: list[str],
        tests_for: dict[str, list[str]],
        union: list[str],
        durations: dict[str, float],
        mutants: Path,
    ):
        self.names, self.tests_for, self.union, self.dur, self.mutants = names, tests_for, union, durations, mutants
        self.failed = self.timed_out = False
        self.status = 0

    def pytest_runtest_logreport(self, report) -> None:  # noqa: ANN001
        if report.failed:
            self.failed = True

    def _run(self, session, by_id, keep, ids: list[str], name: str, limit: float) -> str:  # noqa: ANN001
        os.environ["MUTANT_UNDER_TEST"] = name
        self.failed = self.timed_out = False

        def on_alarm(*_: object) -> None:
            self.timed_out = True
            raise TimeoutError(f"mutant {name} ran past {limit:.0f} s")

        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(max(1, int(limit)))
        try:
            for t in ids:
                if t in by_id:
                    by_id[t].ihook.pytest_runtest_protocol(item=by_id[t], nextitem=keep)
                    if self.failed:
                        break
        except TimeoutError:
            session._setupstate.teardown_exact(keep)
        finally:
            signal.alarm(0)
            os.environ["MUTANT_UNDER_TEST"] = ""
        return "timeout" if self.timed_out else ("killed" if self.failed else "survived")

    def pytest_runtestloop(self, session) -> bool:  # noqa: ANN001
        by_id = {it.nodeid: it for it in session.items}

        class _Keep:  # the "next item" handed to pytest: only the session stays set up (its fixtures are reused)
            def listchain(self) -> list:
                return [session]

        keep = _Keep()
        union = self.union
        base_limit = 60 + 4 * sum(self.dur.get(t, 1.0) for t in union)
        if self._run(session, by_id, keep, union, "", base_limit) != "survived":
            print("the tests fail without any mutant: fix them first", flush=True)
            self.status = 2
            return True
        pending: dict[str, str] = {}
        start = time.time()
        for i, name in enumerate(self.names, 1):
            ids = self.tests_for[name]
            pending[name] = self._run(session, by_id, keep, ids, name, 10 + 4 * sum(self.dur.get(t, 1.0) for t in ids))
            if i % BATCH == 0 or i == len(self.names):
                if self._run(session, by_id, keep, union, "", base_limit) != "survived":
                    print(f"the baseline fails after {name}: {len(pending)} verdicts dropped; run again", flush=True)
                    self.status = 3
                    return True
                _record(self.mutants, pending)
                pending = {}
                print(f"{i}/{len(self.names)} mutants, {time.time() - start:.0f} s", flush=True)
        return True


def run(part: str, survivors: bool, shard: tuple[int, int], only: str = "*") -> int:
    work = mutation.SCRATCH / part
    mutants = work / "mutants"
    if not (mutants / "mutmut-stats.json").exists():
        raise SystemExit(f"{work} has no mutants and test map yet: run `python tools/mutation.py {part}` first.")
    globs = mutation._config()["convlens-mutation"].get("functions", {}).get(part, [])
    stats = json.loads((mutants / "mutmut-stats.json").read_text())
    by_fn, dur = stats["tests_by_mangled_function_name"], stats["duration_by_test"]
    want = 0 if survivors else None  # recorded survivors, or the mutants not run yet
    names = sorted(k for k, code in mutation.recorded(work, globs) if code == want and fnmatch.fnmatch(k, only))
    names = [n for i, n in enumerate(names) if i % shard[1] == shard[0]]
    tests_for = {n: sorted(by_fn.get(n.split("__mutmut_")[0], []), key=lambda t: dur.get(t, 0.0)) for n in names}
    unreached = [n for n in names if not tests_for[n]]
    names = [n for n in names if tests_for[n]]
    print(f"{part}: {len(names)} mutants to run ({len(unreached)} reached by no test)", flush=True)
    if not names:
        return 0
    os.chdir(mutants)
    os.environ.update(mutation._mutmut_env())
    sys.path.insert(0, str(mutants / "src"))
    import pytest

    union = sorted({t for n in names for t in tests_for[n]})
    plugin = _Session(names, tests_for, union, dur, mutants)
    # mutmut's own pytest options, without -x: this loop stops each mutant at its first failure itself
    opts = [o for o in mutation._config()["mutmut"]["pytest_add_cli_args"] if o != "-x"]
    args = [*union, *opts]
    pytest.main(args, plugins=[plugin])
    return plugin.status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part")
    ap.add_argument("--refresh", action="store_true", help="update the scratch copy and the test map first")
    ap.add_argument("--survivors", action="store_true", help="re-run the recorded survivors instead")
    ap.add_argument("--shard", default="0/1", help="I/N: run every N-th mutant from the I-th (one process per core)")
    ap.add_argument(
        "--only", default="*", help="glob on mutant names: run only those (e.g. '*receptive_field_empirical*')"
    )
    a = ap.parse_args(argv)
    i, n = (int(v) for v in a.shard.split("/"))
    if a.refresh:
        refresh(a.part)
    return run(a.part, a.survivors, (i, n), a.only)


if __name__ == "__main__":
    sys.exit(main())
