"""The guided tour: the runner (timing, failure capture, progress, selection) on small registries,
and the real ``convlens tour --quick`` once per session (shared with test_browser.py)."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from _tour_run import quick_tour

from convlens.errors import InputError
from convlens.tour import Body, Progress, Table, TourContext, run_tour, section, section_specs

# ---------------------------------------------------------------- runner on a private registry


def _registry():
    reg: dict = {}

    @section(1, "first", "does one work?", registry=reg)
    def one(ctx):
        return Body(results={"x": 1}, tables=[Table(["a"], [[1]])], api="api()", cli="convlens x")

    @section(2, "broken", "does a failure stop the tour?", registry=reg)
    def two(ctx):
        raise ValueError("boom\nsecond line")

    @section(3, "missing", "what if an API has not landed?", registry=reg)
    def three(ctx):
        import convlens.does_not_exist  # noqa: F401

        return Body()

    @section(4, "wrong type", "a section must return a Body", registry=reg)
    def four(ctx):
        return {"x": 1}

    @section(5, "last", "does the tour go on?", registry=reg)
    def five(ctx):
        return Body(results={"quick": ctx.pick(quick="q", full="f")})

    return reg


def test_runner_captures_failures_and_goes_on():
    events: list[Progress] = []
    tour = run_tour(TourContext(quick=True), registry=_registry(), progress=events.append)
    assert [s.id for s in tour.sections] == ["q1", "q2", "q3", "q4", "q5"]
    assert [s.status for s in tour.sections] == ["ok", "error", "error", "error", "ok"]
    assert tour.sections[1].error == "ValueError: boom" and "second line" in tour.sections[1].traceback
    assert "convlens.does_not_exist" in tour.sections[2].error and "not available" in tour.sections[2].error
    assert "expected Body" in tour.sections[3].error
    assert tour.sections[4].results == {"quick": "q"}
    assert [s.id for s in tour.failed] == ["q2", "q3", "q4"] and not tour.ok
    assert all(s.seconds >= 0 for s in tour.sections)
    # one start and one done event per section, in order, the done event carrying the result
    assert [(e.phase, e.id) for e in events] == [(p, f"q{i}") for i in range(1, 6) for p in ("start", "done")]
    assert all(e.total == 5 for e in events)
    assert events[3].section is tour.sections[1]


def test_runner_selection_and_bad_selection():
    reg = _registry()
    tour = run_tour(TourContext(quick=False), registry=reg, only=["q5", 1])
    assert [s.id for s in tour.sections] == ["q1", "q5"]
    assert tour.sections[1].results == {"quick": "f"}
    with pytest.raises(InputError, match="q99"):
        run_tour(TourContext(), registry=reg, only=["q99"])


def test_duplicate_section_number_is_refused():
    reg = _registry()
    with pytest.raises(ValueError, match="q1"):
        section(1, "again", "?", registry=reg)(lambda ctx: Body())


def test_course_sections_in_order_with_questions():
    specs = section_specs()
    assert [s.id for s in specs] == [f"q{i}" for i in range(1, 22)]
    for s in specs:
        assert s.title and s.question.endswith("?"), s
    titles = " ".join(s.title.lower() for s in specs)
    for word in (
        "multi-channel",
        "padding",
        "dilation",
        "template",
        "pyramid",
        "depth",
        "stride",
        "1x1",
        "pooling",
        "augmentation",
        "transfer",
        "freezing",
        "fine-tuning",
        "inception",
        "gradient",
        "activations",
        "filter",
        "grad-cam",
    ):
        assert word in titles, word


def test_context_image_and_model_errors():
    with pytest.raises(InputError, match="bundled"):
        TourContext.image("no_such_picture")
    assert TourContext.image("coffee").dtype.name == "uint8"


# ---------------------------------------------------------------- the real quick tour (once per session)


@pytest.fixture(scope="module")
def run():
    return quick_tour()


@pytest.mark.slow
def test_quick_tour_all_sections_live(run):
    summary = run.summary
    ids = [s["id"] for s in summary["sections"]]
    assert ids == [f"q{i}" for i in range(1, 22)]
    failed = {s["id"]: s["error"] for s in summary["sections"] if s["status"] != "ok"}
    assert not failed, f"failed sections: {json.dumps(failed, indent=1)}"
    assert run.returncode == 0, run.stderr[-3000:]
    assert summary["ok"] is True and summary["mode"] == "quick" and summary["failed"] == []
    for s in summary["sections"]:
        assert s["results"] or s["tables"], f"{s['id']} computed nothing"
        assert s["api"] and s["cli"].startswith("convlens "), s["id"]
        for f in s["figures"]:
            assert (run.out_dir / f["file"]).stat().st_size > 1000, f


@pytest.mark.slow
def test_quick_tour_progress_and_exit(run):
    # one 'done' line per section on stderr, then where the report is; exit status follows the sections
    done = re.findall(r"^\[\s*(\d+)/(\d+)\] (q\d+)\s.*: (ok|FAILED.*) \([\d.]+ s\)$", run.stderr, flags=re.M)
    assert [d[2] for d in done] == [f"q{i}" for i in range(1, 22)]
    assert str(run.out_dir / "index.html") in run.stderr
    any_failed = any(d[3] != "ok" for d in done)
    assert (run.returncode != 0) == any_failed
    assert run.stdout == ""  # progress and paths go to stderr only


@pytest.mark.slow
def test_quick_tour_budget(run):
    # < 5 min on 2 CPU cores (the contract) -- the whole CLI process, model load included.
    # CONVLENS_TOUR_BUDGET_S raises it on a machine shared with other jobs (CI runs alone: 300).
    budget = float(os.environ.get("CONVLENS_TOUR_BUDGET_S", "300"))
    per_section = {s["id"]: s["seconds"] for s in run.summary["sections"]}
    assert run.seconds < budget, f"quick tour took {run.seconds:.0f} s (> {budget:.0f} s): {per_section}"


@pytest.mark.slow
def test_quick_tour_numbers_match_oracles(run):
    """The live numbers shown are the right ones: cross-check against torch directly."""
    secs = {s["id"]: s for s in run.summary["sections"]}
    q7, q8 = secs["q7"]["results"], secs["q8"]["results"]
    y = torch.nn.functional.conv2d(torch.zeros(1, 32, 128, 128), torch.zeros(16, 32, 3, 3))
    assert q7["output (torch)"] == [y.shape[2], y.shape[3], y.shape[1]] == [126, 126, 16]
    y2 = torch.nn.functional.conv2d(torch.zeros(1, 32, 128, 128), torch.zeros(16, 32, 3, 3), stride=2)
    assert q8["output (torch)"] == [y2.shape[2], y2.shape[3], y2.shape[1]] == [63, 63, 16]
    assert q8["output (tf SAME)"] == [64, 64, 16]
    assert q8["fraction"] == pytest.approx(63.5)
    q1 = secs["q1"]["results"]
    assert q1["channel sums"] == [9, 18, 18] and q1["total"] == 45
    q3 = secs["q3"]["results"]
    assert q3["output"] == [2, 2] and q3["effective kernel"] == 5
    q2 = secs["q2"]["results"]
    assert q2["output"] == [4, 4]


def test_quick_tour_real_model_parts(run, lite0, chelsea):
    """q1/q10/q19's real-model parts: the traced conv_stem sum is the pretrained model's own value (read
    here through get_activations), every stage's effective field lies inside its box, top patches exist."""
    from convlens.inspect import get_activations

    secs = {s["id"]: s for s in run.summary["sections"]}
    q1 = secs["q1"]["results"]
    sums = q1["EfficientNet-Lite0 conv_stem (7, 60, 60): channel sums"]
    total, value = (float(v) for v in q1["conv_stem: traced total / model's value"].split(" / "))
    want = float(get_activations(lite0.model, lite0.preprocess([chelsea]), "conv_stem")["conv_stem"][0, 7, 60, 60])
    assert len(sums) == 3 and sum(sums) == pytest.approx(total, abs=1e-3) and value == pytest.approx(want, abs=1e-4)
    assert total == pytest.approx(want, abs=1e-4)
    q10 = next(t for t in secs["q10"]["tables"] if "effective field" in t["caption"])
    assert len(q10["rows"]) >= 3 and all(r[4] == pytest.approx(1.0) and r[5] <= r[6] for r in q10["rows"])
    assert "top patches" in secs["q19"]["results"]


@pytest.mark.slow
def test_quick_tour_cli_lines_are_real_commands(run):
    """Every 'CLI' line the report shows names an existing command and only its real options."""
    import shlex

    import typer.main

    from convlens.cli import app

    root = typer.main.get_command(app)
    for s in run.summary["sections"]:
        for line in s["cli"].splitlines():
            tokens = shlex.split(line)
            assert tokens[0] == "convlens", line
            cmd = root.commands.get(tokens[1])
            assert cmd is not None, f"{s['id']}: unknown command in {line!r}"
            rest = tokens[2:]
            if getattr(cmd, "commands", None):  # a group: the next token is the subcommand
                cmd = cmd.commands.get(rest[0])
                assert cmd is not None, f"{s['id']}: unknown subcommand in {line!r}"
                rest = rest[1:]
            known = {o for p in cmd.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}
            for tok in rest:
                if tok.startswith("--"):
                    assert tok.split("=")[0] in known, f"{s['id']}: {tok} is not an option of {line!r}"


def test_tour_cli_failing_section_exits_nonzero_after_writing_report(tmp_path, monkeypatch, capsys):
    from convlens.cli import main
    from convlens.tour import course

    monkeypatch.setattr(course, "COURSE", tuple(_registry().values()))
    rc = main(["tour", "--quick", "--out", str(tmp_path), "--only", "1,2,5"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "q2" in err and "FAILED: ValueError: boom" in err and "failed sections: q2" in err
    data = json.loads((tmp_path / "summary.json").read_text())
    assert [s["id"] for s in data["sections"]] == ["q1", "q2", "q5"] and data["failed"] == ["q2"]
    assert "This section failed: ValueError: boom" in (tmp_path / "index.html").read_text()


def test_tour_cli_bad_selection_is_one_line_exit_2(tmp_path, capsys):
    from convlens.cli import main

    assert main(["tour", "--out", str(tmp_path), "--only", "q99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "q99" in err[0]


def test_runner_leaves_the_callers_rng_alone_and_seeds_each_section():
    reg: dict = {}

    @section(1, "draws", "does a section see a seeded RNG?", registry=reg)
    def one(ctx):
        return Body(results={"draw": torch.rand(2).tolist()})

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = run_tour(TourContext(seed=5), registry=reg)
    assert torch.equal(torch.rand(3), expected)  # the caller's stream continues untouched
    torch.rand(7)  # whatever ran before does not change the section's numbers
    b = run_tour(TourContext(seed=5), registry=reg)
    c = run_tour(TourContext(seed=6), registry=reg)
    assert a.sections[0].results == b.sections[0].results != c.sections[0].results
