"""experiments.benchmark --quick end to end: it runs, writes the report and its JSON (not the numbers)."""

from __future__ import annotations

import json
import os

import pytest

SECTION_TITLES = ["## 1.", "## 2.", "## 3.", "## 3b.", "## 4.", "## 5a.", "## 5b.", "## 6.", "## 7.", "## 8."]


@pytest.fixture
def no_torch_env(tmp_path, subprocess_env):
    """The subprocess environment with `import torch` failing, as in CI (which installs '.[test]' only)."""
    fake = tmp_path / "hide_torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("torch hidden by the test")\n')
    return dict(subprocess_env, PYTHONPATH=os.pathsep.join([str(fake.parent), subprocess_env["PYTHONPATH"]]))


def test_quick_run_writes_report_and_json_without_torch(tmp_path, run_python, no_torch_env):
    out = tmp_path / "BENCHMARKS.md"
    proc = run_python(["-m", "experiments.benchmark", "--quick", f"--out={out}"], timeout=300, env=no_torch_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text == proc.stdout  # the printed table is the report
    for title in ["# gzone benchmarks", "## Targets", *SECTION_TITLES]:
        assert title in text, title
    assert "failed" not in text, text
    assert "skipped: torch not installed" in text and "skipped in --quick" in text
    assert "versions:" in text and "torch not installed" in text.split("## Targets")[0]
    result = json.loads((tmp_path / "BENCHMARKS.json").read_text())
    assert set(result) >= {"environment", "config", "sizes", "targets", "tables"}
    assert result["config"]["quick"] is True and result["config"]["repeats"] == 2
    assert result["targets"]["hess_torch"]["met"] is None  # skipped, not met or missed
    for key in ("hess_rate", "hess_default", "step_small", "step_mid", "seeds"):
        assert result["targets"][key]["met"] in (True, False), key
    hessian = next(t for t in result["tables"] if t["title"].startswith("3. "))
    assert [row[2] for row in hessian["rows"]] == [8] and hessian["rows"][0][3] > 0  # d, seconds


def test_quick_torch_rows_agree_with_gzone(tmp_path, run_python):
    pytest.importorskip("torch")
    out = tmp_path / "B.md"
    args = ["-m", "experiments.benchmark", "--quick", "--section=torch,epoch", f"--out={out}"]
    proc = run_python(args, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = {t["section"]: t for t in json.loads((tmp_path / "B.json").read_text())["tables"]}
    routes = {row[3]: row for row in tables["torch"]["rows"]}
    assert set(routes) == {"functional", "double_backward"}
    for row in routes.values():  # same weights, data and P: the same Hessian to float32 rounding
        assert row[4] > 0 and row[7] < 1e-4, row
    (epoch_row,) = tables["epoch"]["rows"]
    assert epoch_row[3] > 0 and epoch_row[4] > 0  # gzone and torch seconds
    assert "not run" in out.read_text()  # targets of the sections left out


def test_bad_section_is_one_line_error(tmp_path, run_python):
    args = ["-m", "experiments.benchmark", "--section=hessian,bogus", f"--out={tmp_path / 'B.md'}"]
    proc = run_python(args, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: --section"), proc.stderr
    assert not (tmp_path / "B.md").exists()
