"""The tour's CLI lines run as printed, from the report folder, on the files the report writes."""

import shlex

import pytest

from convlens.cli import main


@pytest.mark.slow
def test_tour_cli_lines_run_as_printed(tmp_path, monkeypatch, capsys):
    from convlens.report import write_tour_report
    from convlens.tour import TourContext, run_tour

    tour = run_tour(TourContext(quick=True), only=["q1", "q4", "q11", "q13"])
    assert tour.ok, [s.error for s in tour.sections]
    write_tour_report(tour, tmp_path / "my report")  # a path with a space
    for name in ("x.json", "k.json", "pool_x.json", "search.png", "template.png", "chelsea.png"):
        assert (tmp_path / "my report" / name).is_file(), name
    monkeypatch.chdir(tmp_path / "my report")
    for sec in tour.sections:
        for line in sec.cli.splitlines():
            argv = shlex.split(line)
            assert argv[0] == "convlens"
            assert main(argv[1:]) == 0, (sec.id, line, capsys.readouterr().err)
    out = capsys.readouterr().out
    assert "max = " in out  # the pool line traces its first window
