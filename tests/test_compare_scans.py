"""experiments.compare_scans and experiments.plot on synthetic finished radius-scan folders: the table's
numbers equal the arrays' seed means, the figure and JSON are written, bad input is a one-line error."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from experiments import cli, compare_scans, plot
from gzone.runs import records, schema

X = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])


def _fake_scan(workdir, name, frac_peak, experiment="radius_scan"):
    """A complete run folder whose frac_pos peaks at x = 0 with value frac_peak (seed mean)."""
    path = records.run_path(str(workdir), experiment, name)
    axes = {
        "log10_r2_over_rx2": ["radius"],
        "radii": ["radius"],
        "dims": ["d"],
        "frac_pos": ["radius", "d", "seed"],
        "trace_over_frob": ["radius", "d", "seed"],
    }
    records.open_run(
        path,
        experiment=experiment,
        settings={"name": name},
        derived={"model": name, "D": 100},
        axes=axes,
        flags_text="",
        schema_version=schema.VERSION,
    )
    bump = np.exp(-(X**2))[:, None, None]  # [R, 1, 1]
    offsets = np.array([-0.01, 0.0, 0.01])  # 3 seeds, mean offset 0
    frac = 0.5 + (frac_peak - 0.5) * bump + offsets
    frac = np.concatenate([frac, frac], axis=1)  # d = 4, 8: the same curves
    records.finish(
        path,
        {
            "log10_r2_over_rx2": X,
            "radii": 10 ** (X / 2),
            "dims": np.array([4, 8]),
            "frac_pos": frac,
            "trace_over_frob": 4.0 * (frac - 0.5),
        },
    )
    return path


def test_table_and_figure(tmp_path):
    a, b = _fake_scan(tmp_path, "wide", 0.9), _fake_scan(tmp_path, "deep", 0.7)
    out = tmp_path / "cmp" / "depth.png"
    lines = []
    compare_scans.run(
        compare_scans.config_from_argv([f"--run_dirs={a},{b}", "--labels=w,dp", "--d=8", f"--out={out}"]),
        log=lines.append,
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(out.with_suffix(".json").read_text())
    got = {(r["run"], r["metric"]): r for r in rows}
    assert set(got) == {(run, m) for run in ("w", "dp") for m in ("frac_pos", "trace_over_frob")}
    assert got["w", "frac_pos"]["peak"] == pytest.approx(0.9) and got["dp", "frac_pos"][
        "peak"
    ] == pytest.approx(0.7)
    assert got["dp", "trace_over_frob"]["at_rx"] == pytest.approx(0.8)
    assert got["w", "frac_pos"]["peak_x"] == 0.0 and all(r["d"] == 8 for r in rows)
    # frac+ > 0.55 where 0.4 exp(-x^2) > 0.05: |x| <= 1 on this grid (0.4/e = 0.147; 0.4/e^4 = 0.007)
    assert got["w", "frac_pos"]["extent"] == [-1.0, 1.0]
    assert "w " in lines[0] and lines[1].startswith("figure:")


def _main(module, argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(module.config_from_argv, module.run, groups=module.GROUPS, argv=argv)
    captured = capsys.readouterr()
    return exit_.value.code, captured.err.strip()


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--d=16"], "--d"),  # not scanned
        (["--d=8", "--labels=only_one"], "--labels"),
        (["--d=8", "--out=x.pdf"], "--out"),
        (["--d=8", "--missing"], "--run_dirs"),
        (["--d=8", "--other"], "--run_dirs"),
        (["--d=0"], "--d"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, capsys, extra, flag):
    a, b = _fake_scan(tmp_path, "a", 0.9), _fake_scan(tmp_path, "b", 0.8)
    runs = [a, b]
    if "--missing" in extra:
        runs, extra = [a, os.path.join(str(tmp_path), "nowhere")], [e for e in extra if e != "--missing"]
    if "--other" in extra:
        runs, extra = (
            [a, _fake_scan(tmp_path, "t", 0.9, experiment="trajectories")],
            [e for e in extra if e != "--other"],
        )
    args = [f"--run_dirs={','.join(runs)}", *extra]
    if not any(e.startswith("--out") for e in extra):
        args.append(f"--out={tmp_path / 'c.png'}")
    code, err = _main(compare_scans, args, capsys)
    assert code == 2 and flag in err and len(err.splitlines()) == 1, err


def test_plot_redraws_and_refuses_what_is_not_a_finished_run(tmp_path, capsys):
    a = _fake_scan(tmp_path, "a", 0.9)
    for argv, expected in (([], "--run_dir"), ([f"--run_dir={tmp_path}"], "no config.json")):
        code, err = _main(plot, argv, capsys)
        assert code == 2 and expected in err and len(err.splitlines()) == 1, err
    records.update_config(a, status="running")
    code, err = _main(plot, [f"--run_dir={a}"], capsys)
    assert code == 2 and "not completed" in err
