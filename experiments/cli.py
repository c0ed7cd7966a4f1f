"""The command line's runner: flags -> config -> run, with one-line errors.

Each experiment module ends with ``cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)``.
Any bad input (unknown flag, malformed or missing flagfile, bad value, data, run folder, a write that
fails) ends with ONE line ``error: ...`` on stderr and exit status 2, before any run folder is
created (or with the existing one untouched).
"""

from __future__ import annotations

import sys
from typing import Callable

from absl import logging


def fail(message: str) -> None:
    """One line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def main(
    config_from_argv: Callable, run: Callable, *, groups: dict, doc: str = "", argv: list[str] | None = None
) -> None:
    """The command line of an experiment: flags -> config -> run, with one-line errors (exit 2).

    ``--help`` prints the flags of the experiment. Any bad input (flag, flagfile, data, model, run
    folder, option) ends with one line ``error: ...`` on stderr and exit status 2.
    """
    from experiments import config as config_lib
    from gzone import data as data_lib
    from gzone.options import OptionError
    from gzone.runs.records import DamagedFile, RunDirError

    logging.set_verbosity(logging.WARNING)  # keep jax's backend-probing INFO lines quiet
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("--help", "-h", "--helpfull", "-help") for a in argv):
        print(doc.strip(), "", config_lib.define_flags(groups).get_help(), sep="\n")
        sys.exit(0)
    try:
        run(config_from_argv(argv))
    except config_lib.UsageError as err:
        fail(str(err))
    except OptionError as err:
        fail(f"--{err.name}: {err.message}")
    except RunDirError as err:
        fail(f"--{getattr(err, 'flag', 'name')}: {err}")
    except (DamagedFile, data_lib.DataError) as err:
        fail(str(err))
    except OSError as err:  # a write that failed midway (disk full, permissions): nothing written is corrupt
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        fail(
            f"{where}{err.strerror or err}; the run folder holds every unit finished before this; fix the "
            "cause and run the same command again to resume"
        )
