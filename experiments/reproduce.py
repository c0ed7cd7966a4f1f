r"""Re-checks REPRODUCTION.md: runs the manifest's entries and compares what they measure with it.

    python -m experiments.reproduce --list
    python -m experiments.reproduce --check --quick --data_dir=DIR [--claims=1,7] [--workdir=runs]

``--list`` prints every claim's entries (run name, experiment and flagfile with its overrides, quick
or long, expected minutes on 2 CPU cores). ``--check`` runs the selected entries in-process
(``run(config_from_argv([...]))`` of each experiment, figures off) into
<workdir>/<experiment>/<name>/: a run folder from before resumes, a finished one is only read, one
with other settings is refused (said in its rows; nothing is overwritten). Then each quantity is read
from the records (`experiments.reproduce_extract`) and compared with the value REPRODUCTION.md
records: one row per quantity (claim, run, quantity, paper, recorded, now, tolerance, pass / FAIL),
printed and written as markdown to <workdir>/reproduce/check*.md. Exit status 1 if any check fails;
bad input (unknown claim, missing data folder or archive) is one line ``error: ...``, exit status 2.
The entries and how to add one: `experiments.reproduce_manifest`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys
import time

from experiments import cli, config
from experiments.reproduce_extract import Entry, Quantity
from gzone import options
from gzone.options import option
from gzone.runs.progress import to_stderr

FLAGFILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flagfiles")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reproduce(options.Group):
    list: bool = option(False, "Print the claims and their entries (run, quick or long, expected minutes).")
    check: bool = option(False, "Run (resume, or read) the entries and compare with REPRODUCTION.md.")
    claims: tuple[str, ...] | None = option(None, "Claim ids to check, e.g. 1,7 (default: all).", kind="strs")
    quick: bool = option(False, "Only the quick entries (reduced settings; ~10 min in all on 2 cores).")
    long: bool = option(False, "Only the long entries (the full runs; e.g. to read finished run folders).")
    data_dir: str | None = option(None, "Folder of the real datasets' <name>.npz archives.", kind="str")
    workdir: str = option("runs", "Root of the run folders <workdir>/<experiment>/<name>/ and of the table.")


GROUPS = {"reproduce": Reproduce}


def config_from_argv(argv: list[str]) -> Reproduce:
    return config.parse(argv, **GROUPS)["reproduce"]


@dataclasses.dataclass(frozen=True)
class Row:
    claim: int
    run: str
    quantity: Quantity
    now: float
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.quantity.passes(self.now)

    def cells(self) -> list[str]:
        q = self.quantity
        return [str(self.claim), self.run, q.name, q.paper, q.recorded, fmt(self.now), q.tol.text(),
                "pass" if self.passed else "FAIL"]


@dataclasses.dataclass(frozen=True)
class Report:
    rows: list[Row]
    runs: list[dict]  # per run: entry (name), argv, claims, state (before), seconds, folder, error
    path: str | None  # the markdown table

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)


HEAD = ["claim", "run", "quantity", "paper", "recorded", "now", "tolerance", "result"]


def fmt(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.4g}"


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEAD, *rows]) for i in range(len(HEAD))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [HEAD, *rows]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def select(c: Reproduce, entries) -> list[Entry]:
    known = sorted({e.claim for e in entries})
    wanted = known if not c.claims else []
    for text in c.claims or ():
        if not text.strip().isdigit() or int(text) not in known:
            raise config.UsageError("claims", f"unknown claim {text!r}; the manifest has claims "
                                    f"{', '.join(map(str, known))}")
        wanted.append(int(text))
    if c.quick and c.long:
        raise config.UsageError("long", "give at most one of --quick and --long")
    chosen = [e for e in entries if e.claim in wanted and not (c.quick and not e.quick or c.long and e.quick)]
    if not chosen:
        kind = "quick " if c.quick else "long " if c.long else ""
        raise config.UsageError("claims", f"no {kind}entries for claims {wanted}")
    return chosen


def argv_of(entry: Entry, c: Reproduce) -> list[str]:
    data = [f"--data_dir={c.data_dir}"] if c.data_dir else []
    return [f"--flagfile={os.path.join(FLAGFILES, entry.flagfile + '.flags')}", *entry.overrides,
            f"--name={entry.name}", f"--workdir={c.workdir}", "--noplots", *data]


def describe(entry: Entry) -> str:
    return " ".join([entry.experiment, f"{entry.flagfile}.flags", *entry.overrides])


def list_entries(entries, claims: dict, log) -> None:
    for claim in sorted({e.claim for e in entries}):
        log(f"claim {claim}: {claims.get(claim, '')}")
        for e in (e for e in entries if e.claim == claim):
            log(f"  {e.name:<40} {'quick' if e.quick else 'long ':<5} ~{e.minutes:>4g} min  {describe(e)}")


def _prepare(c: Reproduce, chosen: list[Entry]) -> dict:
    """The runs (shared by entries with equal settings), their configs parsed and their data checked."""
    if c.data_dir is not None and not os.path.isdir(c.data_dir):
        raise config.UsageError("data_dir", f"folder {c.data_dir!r} does not exist")
    runs: dict = {}
    for e in chosen:
        key = (e.experiment, e.flagfile, e.overrides, e.name)
        if key in runs:
            runs[key]["claims"].append(e.claim)
            continue
        module = importlib.import_module(f"experiments.{e.experiment}")
        argv = argv_of(e, c)
        runs[key] = {"entry": e, "module": module, "argv": argv, "config": module.config_from_argv(argv),
                     "claims": [e.claim]}
    for run_ in runs.values():
        dataset = run_["config"].data.dataset
        if dataset == "mnist1d":
            continue
        where = f"needed by claim {run_['claims'][0]} ({run_['entry'].name})"
        if c.data_dir is None:
            raise config.UsageError("data_dir", f"required: the folder of {dataset}.npz, {where}")
        if not os.path.exists(os.path.join(c.data_dir, f"{dataset}.npz")):
            raise config.UsageError("data_dir", f"{c.data_dir} has no {dataset}.npz, {where}")
    return runs


def _execute(runs: dict, log, progress_log) -> None:
    from gzone.runs import progress, records

    for i, run_ in enumerate(runs.values(), 1):
        e = run_["entry"]
        folder = records.run_path(run_["config"].output.workdir, e.experiment, e.name)
        state = "new run"
        if os.path.exists(os.path.join(folder, "config.json")):
            try:
                done = records.read_config(folder).get("status") == "complete"
            except records.DamagedFile:
                done = False
            state = "finished: reading" if done else "resuming"
        claims = ", ".join(map(str, dict.fromkeys(run_["claims"])))
        log(f"[{i}/{len(runs)}] claim {claims}: {describe(e)} -> {e.name} "
            f"({'quick' if e.quick else 'long'}, ~{e.minutes:g} min): {state}")
        start = time.time()
        try:
            run_["folder"] = run_["module"].run(run_["config"], log=lambda line: None, progress=progress_log)
            run_["error"] = ""
        except (records.RunDirError, records.DamagedFile) as err:
            run_["folder"], run_["error"] = None, f"run folder refused: {err}"
        run_.update(state=state, seconds=time.time() - start)
        log(f"    {run_['error'] or 'done'} ({progress.duration(run_['seconds'])})")


def _rows(chosen: list[Entry], runs: dict) -> list[Row]:
    from gzone.runs import schema

    rows, read = [], {}
    for e in chosen:
        run_ = runs[(e.experiment, e.flagfile, e.overrides, e.name)]
        note = run_["error"]
        if not note and run_["folder"] not in read:
            try:
                read[run_["folder"]] = schema.read(run_["folder"])
            except ValueError as err:  # not complete (e.g. a process of a split run), another schema
                note = run_["error"] = str(err)
        for q in e.quantities:
            now, why = math.nan, note
            if not note:
                try:
                    now = float(q.extract(read[run_["folder"]]))
                except (KeyError, ValueError, IndexError, TypeError) as err:
                    why = f"{type(err).__name__}: {err}"
            rows.append(Row(e.claim, e.name, q, now, why))
    return rows


def _kind(c: Reproduce) -> str:
    return "quick" if c.quick else "long" if c.long else ""


def command(c: Reproduce) -> str:
    """The command line of a check."""
    flags = ["--check", *([f"--{_kind(c)}"] if _kind(c) else []),
             *([f"--claims={','.join(c.claims)}"] if c.claims else []),
             *([f"--data_dir={c.data_dir}"] if c.data_dir else []), f"--workdir={c.workdir}"]
    return "python -m experiments.reproduce " + " ".join(flags)


def _markdown(c: Reproduce, rows: list[Row], runs: dict) -> str:
    def line(cells):
        return "| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |"

    out = [f"# Reproduction check{f' ({_kind(c)})' if _kind(c) else ''}", "", f"    {command(c)}", "",
           line(HEAD + ["reason", "note"]), line(["---"] * (len(HEAD) + 2))]
    out += [line(r.cells() + [r.quantity.tol.reason, r.note]) for r in rows]
    passed = sum(r.passed for r in rows)
    out += ["", f"{passed} of {len(rows)} checks pass.", "", line(["run", "what", "state before", "wall time",
                                                                   "folder"]), line(["---"] * 5)]
    out += [line([r["entry"].name, describe(r["entry"]), r["state"], f"{r['seconds']:.0f} s",
                  r["folder"] or r["error"]]) for r in runs.values()]
    parts = ["check", _kind(c), f"claims-{'-'.join(c.claims)}" if c.claims else ""]
    name = "_".join(p for p in parts if p)
    path = os.path.join(c.workdir, "reproduce", f"{name}.md")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("\n".join(out) + "\n")
    return path


def run(c: Reproduce, *, log=print, progress=to_stderr, entries=None, claims=None) -> Report:
    """Lists or checks (see the module docstring); returns the rows, the runs and the table's path.

    ``progress`` takes the experiments' progress lines (None: dropped); ``entries`` and ``claims``
    replace the manifest's ENTRIES and CLAIMS."""
    from experiments import reproduce_manifest as manifest

    entries = manifest.ENTRIES if entries is None else entries
    if c.list == c.check:
        raise config.UsageError("check", "give one of --list or --check")
    if c.list:
        list_entries(entries, manifest.CLAIMS if claims is None else claims, log)
        return Report([], [], None)
    chosen = select(c, entries)
    runs = _prepare(c, chosen)
    _execute(runs, log, progress)
    rows = _rows(chosen, runs)
    log(text_table([r.cells() for r in rows]))
    for r in rows:
        if r.note:
            log(f"claim {r.claim} {r.run} {r.quantity.name}: {r.note}")
    path = _markdown(c, rows, runs)
    log(f"{sum(r.passed for r in rows)} of {len(rows)} checks pass; table: {path}")
    kept = ("argv", "claims", "state", "seconds", "folder", "error")
    return Report(rows, [{"entry": r["entry"].name, **{k: r[k] for k in kept}} for r in runs.values()], path)


def _run_and_exit(c: Reproduce) -> None:
    if not run(c).ok and c.check:
        sys.exit(1)


if __name__ == "__main__":
    cli.main(config_from_argv, _run_and_exit, groups=GROUPS, doc=__doc__)
