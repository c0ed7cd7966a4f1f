"""Shared absl flags of the experiments and one-line error handling.

Each experiment defines its flags with the ``define_*`` helpers below plus its own, turns them
into a frozen config dataclass once (raising `UsageError` naming the flag on bad input), and
calls the library. `run(main)` replaces ``absl.app.run`` so that any bad input (unknown flag,
malformed or missing flagfile, bad value) ends with ONE line on stderr and exit status 2,
before any run folder is created.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Callable, Sequence

from absl import app, flags, logging

FLAGS = flags.FLAGS
_DEFINED: list[str] = []  # flags written to flags.txt, in definition order


class UsageError(ValueError):
    """Bad flag value: the message starts with the flag's name."""

    def __init__(self, flag: str, message: str):
        super().__init__(f"--{flag}: {message}")
        self.flag = flag


def _track(name: str) -> None:
    if name not in _DEFINED:
        _DEFINED.append(name)


def define_string(name, default, help_):
    flags.DEFINE_string(name, default, help_)
    _track(name)


def define_integer(name, default, help_):
    flags.DEFINE_integer(name, default, help_)
    _track(name)


def define_float(name, default, help_):
    flags.DEFINE_float(name, default, help_)
    _track(name)


def define_bool(name, default, help_):
    flags.DEFINE_bool(name, default, help_)
    _track(name)


def define_enum(name, default, values, help_):
    flags.DEFINE_enum(name, default, values, help_)
    _track(name)


def define_list(name, default, help_):
    flags.DEFINE_list(name, default, help_)
    _track(name)


# --------------------------------------------------------------------------- flag groups


def define_data_flags(default_dataset: str = "mnist1d") -> None:
    define_string(
        "dataset",
        default_dataset,
        "mnist1d (generated, no data needed), or a name found as <data_dir>/<name>.npz or in tfds.",
    )
    define_string("data_dir", None, "Folder of <name>.npz archives (uint8 x_train, y_train, x_test, y_test).")
    define_string("tfds_data_dir", None, "tensorflow-datasets data folder with prepared array_record files.")
    define_integer("n_train", None, "Use a deterministic random subset of this many training examples.")
    define_integer("n_test", None, "Use a deterministic random subset of this many test examples.")


def define_model_flags() -> None:
    define_enum("model", "mlp", ["mlp", "cnn_fs", "small_cnn"], "Network family.")
    define_list(
        "widths", None, "Hidden widths (mlp) or conv channels (cnns); default 200,200 / 16,16 / 32,64,64."
    )
    define_enum("activation", "relu", ["relu", "tanh"], "Nonlinearity.")


def define_radius_flags() -> None:
    define_list("log10_r2_over_rx2", None, "Radii as start,stop,num of log10(r^2/r_X^2), e.g. -4,4,17.")
    define_list("radii", None, "Absolute radii |theta| (alternative to --log10_r2_over_rx2).")


def define_output_flags(experiment: str) -> None:
    define_string("workdir", "runs", "Root folder of run folders: <workdir>/<experiment>/<name>/.")
    define_string("name", None, f"Run name (default: derived from the settings of this {experiment} run).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing run folder with other settings.")


def define_precision_flags() -> None:
    define_enum(
        "dtype", "float32", ["float32", "float64"], "Floating point type; float64 turns on jax_enable_x64."
    )
    define_integer("seed", 0, "Root seed of the run (one jax.random.key, split into named streams).")


# --------------------------------------------------------------------------- parsing


def int_list(flag: str, values: Sequence[str] | None, *, minimum: int | None = None) -> tuple[int, ...]:
    if not values:
        raise UsageError(flag, "must be a non-empty comma-separated list of integers")
    try:
        out = tuple(int(v) for v in values)
    except ValueError:
        raise UsageError(flag, f"expected integers, got {','.join(values)!r}") from None
    if minimum is not None and min(out) < minimum:
        raise UsageError(flag, f"values must be >= {minimum}, got {','.join(values)}")
    return out


def float_list(flag: str, values: Sequence[str] | None) -> tuple[float, ...]:
    if not values:
        raise UsageError(flag, "must be a non-empty comma-separated list of numbers")
    try:
        out = tuple(float(v) for v in values)
    except ValueError:
        raise UsageError(flag, f"expected numbers, got {','.join(values)!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise UsageError(flag, "values must be finite")
    return out


def radius_grid(log_spec: Sequence[str] | None, radii: Sequence[str] | None) -> dict:
    """Resolves the radius flags into {'kind': 'relative'|'absolute', 'values': [...]}.

    ``relative`` values are log10(r^2/r_X^2); ``absolute`` values are radii.
    """
    if bool(log_spec) == bool(radii):
        raise UsageError(
            "log10_r2_over_rx2", "give exactly one of --log10_r2_over_rx2=start,stop,num or --radii=r1,r2,..."
        )
    if radii:
        values = float_list("radii", radii)
        if min(values) <= 0:
            raise UsageError("radii", f"radii must be positive, got {','.join(radii)}")
        return {"kind": "absolute", "values": values}
    parts = float_list("log10_r2_over_rx2", log_spec)
    if len(parts) != 3 or parts[2] < 1 or parts[2] != int(parts[2]):
        raise UsageError(
            "log10_r2_over_rx2",
            f"expected start,stop,num with num a positive integer, got {','.join(log_spec)}",
        )
    start, stop, num = parts[0], parts[1], int(parts[2])
    values = tuple(start + (stop - start) * i / (num - 1) for i in range(num)) if num > 1 else (start,)
    return {"kind": "relative", "values": values}


def model_spec_fields() -> dict:
    """kind, widths, activation from the model flags (defaults per model kind)."""
    from gzone import models

    if FLAGS.widths is None:
        widths = models.default_widths(FLAGS.model)
    elif len(FLAGS.widths) == 0 and FLAGS.model == "mlp":
        widths = ()  # a linear softmax classifier
    else:
        widths = int_list("widths", FLAGS.widths, minimum=1)
    return {"kind": FLAGS.model, "widths": tuple(widths), "activation": FLAGS.activation}


def flags_text() -> str:
    """The experiment's flags as replayable ``--name=value`` lines."""
    lines = []
    for name in _DEFINED:
        value = FLAGS[name].value
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
            continue
        lines.append(f"--{name}={value}")
    return "\n".join(lines) + "\n"


def enable_x64_if(dtype: str) -> None:
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)


# --------------------------------------------------------------------------- running


def fail(message: str) -> None:
    """One line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _parse(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)
    except flags.Error as err:
        message = str(err).splitlines()[0] if str(err) else "bad flags"
        fail(message.replace("ERROR:: ", ""))
    except (OSError, UnicodeDecodeError) as err:
        fail(f"cannot read flags: {err}")
    return argv  # unreachable


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
    except (config_lib.UsageError, UsageError) as err:
        fail(str(err))
    except OptionError as err:
        fail(f"--{err.name}: {err.message}")
    except RunDirError as err:
        fail(f"--name: {err}")
    except (DamagedFile, data_lib.DataError) as err:
        fail(str(err))
    except OSError as err:  # a write that failed midway (disk full, permissions): nothing written is corrupt
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        fail(
            f"{where}{err.strerror or err}; the run folder holds every unit finished before this; fix the cause "
            "and run the same command again to resume"
        )


def run(main: Callable[[list[str]], None]) -> None:
    """absl's app.run with one-line errors for bad flags and `UsageError`s."""

    def wrapped(argv):
        logging.set_verbosity(logging.WARNING)  # keep jax's backend-probing INFO lines quiet
        if len(argv) > 1:
            fail(f"unexpected positional arguments: {' '.join(argv[1:])} (flags look like --name=value)")
        from gzone.runs.records import RunDirError

        try:
            main(argv)
        except UsageError as err:
            fail(str(err))
        except RunDirError as err:  # an existing run folder holds other settings
            fail(f"--name: {err}")

    app.run(wrapped, flags_parser=_parse)


class Progress:
    """Unit k of n, elapsed, ETA on stderr.

    ``weights`` (one per pending unit, e.g. the subspace dimension d) make the ETA track units of
    unequal cost: the remaining weight times the measured seconds per unit of weight.
    """

    def __init__(self, total: int, label: str, done: int = 0, weights=None):
        self.total, self.label, self.done = total, label, done
        self.start = time.time()
        self.fresh = 0
        self.weights = list(weights) if weights is not None else None
        self.remaining_weight = float(sum(self.weights)) if self.weights else None
        self.done_weight = 0.0

    def step(self, what: str, weight: float | None = None) -> None:
        self.done += 1
        self.fresh += 1
        elapsed = time.time() - self.start
        if self.remaining_weight is not None and weight is not None:
            self.done_weight += weight
            self.remaining_weight -= weight
            eta = elapsed / self.done_weight * max(self.remaining_weight, 0.0)
        else:
            eta = elapsed / self.fresh * (self.total - self.done)
        print(
            f"[{self.label}] unit {self.done}/{self.total} {what} | elapsed {_fmt(elapsed)}, ETA {_fmt(eta)}",
            file=sys.stderr,
            flush=True,
        )


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def check_data_dir(data_dir: str | None) -> None:
    if data_dir is not None and not os.path.isdir(data_dir):
        raise UsageError("data_dir", f"folder {data_dir!r} does not exist")


def load_data(dataset: str, data_dir, tfds_data_dir, n_train, n_test):
    """gzone.data.load with its errors turned into one-line flag errors."""
    from gzone import data

    check_data_dir(data_dir)
    try:
        return data.load(
            dataset, data_dir=data_dir, tfds_data_dir=tfds_data_dir, n_train=n_train, n_test=n_test
        )
    except data.DataError as err:
        flag = "n_train" if "n_train" in str(err) else "n_test" if "n_test" in str(err) else "dataset"
        raise UsageError(flag, str(err)) from None


def define_training_flags(*, epochs: int = 5, batch_size: int = 128, lr: float = 1e-3) -> None:
    define_enum("optimizer", "adam", ["adam", "sgd", "momentum"], "optax optimizer.")
    define_float("lr", lr, "Learning rate.")
    define_integer(
        "batch_size", batch_size, "Examples per step (the last partial batch of an epoch is dropped)."
    )
    define_integer("epochs", epochs, "Training epochs.")
    define_integer(
        "record_every", 50, "Record train loss/accuracy/radius every this many steps (within each epoch)."
    )
    define_integer(
        "epochs_per_call",
        1,
        "Epochs per compiled call; a checkpoint is written after each call (resume granularity).",
    )
    define_enum(
        "seed_mode",
        "auto",
        ["auto", "vmap", "map"],
        "Seeds as vmap or lax.map (auto: map on CPU, vmap on GPU/TPU).",
    )


def check_training_flags() -> None:
    for name in ("batch_size", "epochs", "record_every", "epochs_per_call"):
        if FLAGS[name].value < 1:
            raise UsageError(name, f"must be >= 1, got {FLAGS[name].value}")
    if not FLAGS.lr > 0:
        raise UsageError("lr", f"must be > 0, got {FLAGS.lr}")


class Problem:
    """Data on the device, the model, its flat view and r_X (built once per run)."""

    def __init__(
        self, *, dataset, data_dir, tfds_data_dir, n_train, n_test, model, widths, activation, dtype
    ):
        import jax.numpy as jnp

        from gzone import flat, models, train

        self.dataset = load_data(dataset, data_dir, tfds_data_dir, n_train, n_test)
        self.spec = models.ModelSpec(model, tuple(widths), activation)
        self.module = models.build(self.spec, self.dataset.num_classes)
        self.dtype = jnp.float64 if dtype == "float64" else jnp.float32
        self.fm = flat.flat_model(self.module, self.dataset.input_shape, self.dtype)
        self.r_x = models.xavier_radius(self.module, self.dataset.input_shape)
        ds = self.dataset
        self.data = train.Data(
            jnp.asarray(ds.x_train, self.dtype),
            jnp.asarray(ds.y_train),
            jnp.asarray(ds.x_test, self.dtype),
            jnp.asarray(ds.y_test),
        )

    def sample_fn(self, convention: str):
        from gzone import flat

        return flat.sample_fn(self.module, self.dataset.input_shape, convention, self.dtype)

    def describe(self) -> dict:
        return {
            "D": self.fm.D,
            "r_x": self.r_x,
            "model": self.spec.name,
            "dataset": self.dataset.describe(),
            "layers": list(self.fm.layers),
        }


# Config fields that say where and how a run is shown, not what it computes: a resume ignores them.
NOT_SETTINGS = ("workdir", "name", "overwrite", "plots", "data_dir", "tfds_data_dir", "epochs_per_call")


def resume_settings(config, *also_ignored: str) -> dict:
    """A config dataclass as the settings a resume must match (`NOT_SETTINGS` and `also_ignored` left out)."""
    import dataclasses

    out = dataclasses.asdict(config)
    for key in (*NOT_SETTINGS, *also_ignored):
        out.pop(key, None)
    return out


def resumable_fit(path: str, unit: str, run_fn, state0, *, epochs: int, epochs_per_call: int, log=None):
    """train.fit with a checkpoint after every call; resumes from the unit's checkpoint if any."""
    from gzone import train
    from gzone.runs import records

    start, state, history = 0, state0, None
    checkpoint = records.load_checkpoint(path, unit, state0)
    if checkpoint is not None:
        start, state, history = checkpoint
        if log:
            log(f"  {unit}: resuming after epoch {start}")

    def on_chunk(epoch, st, hist):
        records.save_checkpoint(path, unit, epoch=epoch, state=st, history=hist)
        if log and epoch < epochs:
            log(
                f"  {unit}: epoch {epoch}/{epochs}, test accuracy {np_mean(hist['test_accuracy'][..., -1]):.4f}"
            )

    return train.fit(
        run_fn,
        state,
        epochs=epochs,
        epochs_per_call=epochs_per_call,
        start_epoch=start,
        history=history,
        on_chunk=on_chunk,
    )


def np_mean(x) -> float:
    import numpy as np

    return float(np.mean(np.asarray(x)))
