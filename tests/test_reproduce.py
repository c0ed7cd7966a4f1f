"""The reproduction manifest and its checker: REPRODUCTION.md agrees with the manifest, the comparison at
its edges, the table, --list, bad input, and one in-process --check on MNIST-1D (no data folder)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from shared_data import generated_once, shared_data_dir

from experiments import cli, reproduce, reproduce_manifest
from experiments import reproduce_extract as x
from experiments.reproduce_extract import Entry, Quantity, Tol

REPO = Path(__file__).resolve().parents[1]
_data_generated_once = pytest.fixture(scope="module", autouse=True)(generated_once)


def _sections() -> dict[int, str]:
    """Claim number -> the text of its section of REPRODUCTION.md (heading to the next heading)."""
    text = (REPO / "REPRODUCTION.md").read_text()
    parts = re.split(r"^## ", text, flags=re.M)[1:]
    out = {}
    for part in parts:
        match = re.match(r"Claim (\d+):", part)
        if match:
            out[int(match.group(1))] = part
    return out


def _written(value: str, text: str) -> bool:
    """`value` occurs in `text` as a number of its own (not inside a longer one: 0.86 is not in 0.865)."""
    return re.search(rf"(?<![\d.+\-]){re.escape(value)}(?![\d])", text) is not None


def test_every_recorded_value_is_written_in_its_claims_section():
    sections = _sections()
    missing = [(e.claim, e.name, q.name, q.recorded) for e in reproduce_manifest.ENTRIES for q in e.quantities
               if e.claim not in sections or not _written(q.recorded, sections[e.claim])]
    assert not missing, f"recorded values not written in REPRODUCTION.md's claim sections: {missing}"


def test_every_claim_section_has_entries_and_every_entry_a_section():
    sections, entries = _sections(), reproduce_manifest.ENTRIES
    assert sorted(sections) == sorted({e.claim for e in entries}) == sorted(reproduce_manifest.CLAIMS)
    no_quick = reproduce_manifest.NO_QUICK
    assert set(no_quick) <= set(sections) and all(why.strip() for why in no_quick.values())
    for claim in sections:  # --quick checks something real for each claim, or the manifest says why not
        quick = any(e.quick for e in entries if e.claim == claim)
        assert quick != (claim in no_quick), (f"claim {claim}: a quick entry or a NO_QUICK reason, "
                                              f"not {'both' if quick else 'neither'}")


def test_written_matches_whole_numbers_only():
    assert _written("0.86", "frac+ 0.86 +- 0.05") and _written("707", "d_int90 = 707 (the first")
    assert not _written("0.86", "0.865") and not _written("0.5", "-0.5") and not _written("70", "707")
    assert _written("+2.5", "[-0.5, +2.5]") and _written("-0.5", "[-0.5, +2.5]")


def test_entries_are_well_formed():
    keys = {}
    for e in reproduce_manifest.ENTRIES:
        assert (REPO / "experiments" / "flagfiles" / f"{e.flagfile}.flags").exists(), e.flagfile
        assert e.quantities and e.minutes > 0
        assert all(math.isfinite(q.value) for q in e.quantities), f"{e.name}: a recorded value is no number"
        assert all(q.tol.reason and q.tol.bound(q.value) > 0 for q in e.quantities), e.name
        # one run name per setting: entries that share a run folder share its settings
        keys.setdefault((e.experiment, e.name), set()).add((e.flagfile, e.overrides))
    assert all(len(v) == 1 for v in keys.values()), {k: v for k, v in keys.items() if len(v) > 1}
    assert sum(e.minutes for e in {(e.experiment, e.name): e for e in reproduce_manifest.ENTRIES
                                   if e.quick}.values()) <= 20


def test_every_entry_parses_into_its_experiments_config():
    c = reproduce.config_from_argv(["--check", "--workdir=/nonexistent"])
    for e in reproduce_manifest.ENTRIES:
        module = __import__(f"experiments.{e.experiment}", fromlist=["config_from_argv"])
        config = module.config_from_argv(reproduce.argv_of(e, c))
        assert config.output.name == e.name and not config.output.plots


def test_comparison_at_the_tolerance_edge_and_nan():
    absolute = Quantity("q", "-", "0.50", None, Tol(0.02, 0, "why"))
    assert absolute.passes(0.52) and absolute.passes(0.48) and absolute.passes(0.50)
    assert not absolute.passes(0.5201) and not absolute.passes(0.4799)
    relative = Quantity("q", "-", "-2", None, Tol(0, 0.5, "why"))  # bound 0.5 * |-2| = 1
    assert relative.passes(-3.0) and relative.passes(-1.0) and not relative.passes(-3.001)
    both = Quantity("q", "-", "100", None, Tol(1, 0.01, "why"))  # 1 + 1
    assert both.passes(102.0) and not both.passes(102.01)
    for bad in (math.nan, math.inf, -math.inf):
        assert not absolute.passes(bad) and not Quantity("q", "-", "0", None, Tol(1e9, 1, "w")).passes(bad)


def test_table_rows():
    q = Quantity("frac+ at r_X, d = 10", "~0.99", "0.980", None, Tol(0.025, 0, "why"))
    good, bad = reproduce.Row(1, "fs", q, 0.98), reproduce.Row(1, "fs", q, math.nan, "KeyError: x")
    assert good.cells() == ["1", "fs", "frac+ at r_X, d = 10", "~0.99", "0.980", "0.98", "+-0.025", "pass"]
    assert bad.cells()[-3:] == ["nan", "+-0.025", "FAIL"]
    text = reproduce.text_table([good.cells(), bad.cells()]).splitlines()
    assert text[0].split() == reproduce.HEAD and set(text[1]) == {"-"} and text[2].split()[-1] == "pass"
    assert Tol(0.02, 0.01, "w").text() == "+-0.02 + 1%" and Tol(0, 0.1, "w").text() == "+-10%"
    assert reproduce.fmt(2.7351) == "2.735" and reproduce.fmt(1.6e-11) == "1.6e-11"


def test_list_prints_every_claim_and_entry():
    lines = []
    reproduce.run(reproduce.config_from_argv(["--list"]), log=lines.append)
    text = "\n".join(lines)
    for claim, title in reproduce_manifest.CLAIMS.items():
        assert f"claim {claim}: {title}" in text
    for e in reproduce_manifest.ENTRIES:
        line = next(li for li in lines if li.split()[:1] == [e.name])
        assert ("quick" if e.quick else "long") in line and f"{e.flagfile}.flags" in line
        assert all(o in line for o in e.overrides) and f"~{e.minutes:>4g} min" in line


def _main(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(reproduce.config_from_argv, reproduce._run_and_exit, groups=reproduce.GROUPS, argv=argv)
    captured = capsys.readouterr()
    return exit_.value.code, captured.err.strip()


@pytest.mark.parametrize("argv, flag", [
    (["--check", "--claims=42"], "--claims"),
    (["--check", "--claims=one"], "--claims"),
    (["--check", "--claims=1"], "--data_dir"),  # mnist.npz needed, no folder given
    (["--check", "--claims=1", "--data_dir={tmp}/absent"], "--data_dir"),
    (["--check", "--claims=2", "--data_dir={tmp}"], "--data_dir"),  # a folder without cifar10.npz
    (["--check", "--quick", "--long"], "--long"),
    ([], "--check"),
    (["--list", "--check"], "--check"),
])
def test_bad_input_is_one_line_exit_2(argv, flag, tmp_path, capsys):
    code, err = _main([a.format(tmp=tmp_path) for a in argv] + [f"--workdir={tmp_path}/w"], capsys)
    assert code == 2 and err.startswith(f"error: {flag}") and len(err.splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "w")


LOG10 = math.log(10)


TINY = ("--log10_r2_over_rx2=-4,0,2", "--num_seeds=1", "--n_hessian=32")


def _tiny(name="tiny", overrides=(*TINY, "--dims=2")):
    """A 2-radius smoke scan on MNIST-1D; far inside r_X (x = -4) the logits are ~1e-4 and the loss log 10."""
    right = Quantity("loss far inside", "log 10", f"{LOG10:.4f}", x.mean("loss", radius=-4, d=2),
                     Tol(0.001, 0, "logits ~ (r / r_X)^2 = 1e-4"))
    wrong = Quantity("loss far inside, wrong", "-", "1.0", x.mean("loss", radius=-4, d=2), Tol(0.1, 0, "w"))
    off_grid = Quantity("off the grid", "-", "1.0", x.mean("loss", radius=3, d=2), Tol(0.1, 0, "w"))
    return Entry(1, name, "radius_scan", "smoke", (right, wrong, off_grid), overrides=overrides, quick=True,
                 minutes=0.1)


def test_check_runs_resumes_compares_and_writes_the_table(tmp_path):
    c = reproduce.config_from_argv(["--check", "--quick", f"--workdir={tmp_path}"])
    lines = []
    report = reproduce.run(c, log=lines.append, progress=None, entries=(_tiny(),))
    assert [r.passed for r in report.rows] == [True, False, False] and not report.ok
    assert abs(report.rows[0].now - LOG10) < 1e-3 and report.rows[1].now == report.rows[0].now
    assert math.isnan(report.rows[2].now) and "radius = 3" in report.rows[2].note
    folder = tmp_path / "radius_scan" / "tiny"
    assert report.runs[0]["state"] == "new run" and report.runs[0]["folder"] == str(folder)
    assert report.path == str(tmp_path / "reproduce" / "check_quick.md")
    table = Path(report.path).read_text()
    assert table.count("| 1 | tiny | loss far inside") == 2 and "| pass |" in table and "| FAIL |" in table
    assert "python -m experiments.reproduce --check --quick" in table and "1 of 3 checks pass" in table
    assert any("FAIL" in li for li in lines) and lines[-1].endswith(report.path)

    again = reproduce.run(c, log=lambda line: None, progress=None, entries=(_tiny(),))  # finished: only read
    assert again.runs[0]["state"] == "finished: reading" and [r.now for r in again.rows[:2]] == [
        r.now for r in report.rows[:2]]

    other = _tiny(overrides=(*TINY, "--dims=4"))  # the same run folder, other settings
    refused = reproduce.run(c, log=lambda line: None, progress=None, entries=(other,))
    assert not any(r.passed for r in refused.rows)
    assert all(r.note.startswith("run folder refused") for r in refused.rows)
    assert (folder / "arrays.npz").exists()  # nothing overwritten


@pytest.mark.slow
def test_quick_check_on_the_real_data(tmp_path):
    """The whole --quick set (~20 min on 2 cores) from scratch: every quick value within its tolerance."""
    data_dir = shared_data_dir("mnist.npz", "fashion_mnist.npz", "cifar10.npz")
    c = reproduce.config_from_argv(["--check", "--quick", f"--data_dir={data_dir}", f"--workdir={tmp_path}"])
    report = reproduce.run(c, log=print, progress=None)
    assert report.ok, [(r.claim, r.run, r.quantity.name, r.quantity.recorded, r.now, r.note)
                       for r in report.rows if not r.passed]


def test_density_and_gordon_extractors_read_by_named_coordinates():
    from types import SimpleNamespace

    # two radii x 1 d x 2 seeds x 1 probe x 2 nodes; at x = 0 seed 0 has nodes 1, 3 (weights 1/2):
    # m1 = 2, m2 = 5, so Tr/||H||_F = sqrt(D) 2 / sqrt(5); seed 1 has 2, 2: sqrt(D) 2 / 2
    nodes = np.zeros((2, 1, 2, 1, 2))
    nodes[1, 0, 0, 0], nodes[1, 0, 1, 0] = (1.0, 3.0), (2.0, 2.0)
    records = SimpleNamespace(arrays={"density_nodes": nodes, "density_weights": np.full_like(nodes, 0.5),
                                      "log10_r2_over_rx2": np.array([-1.0, 0.0])},
                              derived={"D": 16, "num_classes": 1})
    want = 4 * (2 / math.sqrt(5) + 1) / 2
    assert math.isclose(x.density("trace_over_frob", radius=0)(records), want, rel_tol=1e-12)
    with pytest.raises(KeyError):
        x.density("trace_over_frob", radius=1)(records)
    rows = [{"target": 0.8, "start": "t0", "larsen": 704.1}, {"target": 0.8, "start": "t8", "larsen": 624.6},
            {"target": 0.5, "start": "t0", "larsen": None}]
    records = SimpleNamespace(analysis={"gordon": rows})
    assert x.gordon("larsen", target=0.8, start="t8")(records) == 624.6
    assert math.isnan(x.gordon("larsen", target=0.5, start="t0")(records))
    with pytest.raises(KeyError):
        x.gordon("larsen", target=0.35, start="t0")(records)
