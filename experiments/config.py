"""Config groups of the command line, defined once, and flags generated from them.

Every group is a frozen options dataclass (`gzone.options`): the library's (training, points,
projection, seeds, ...) and the command line's own below (data, model, radius grid, output). An
experiment composes groups and parses its flags into them:

    parsed = config.parse(argv, data=config.Data, model=config.Model, output=config.Output,
                          radii=config.RadiusGrid, scan=ScanOptions)
    parsed["scan"]            # a ScanOptions built from the flags (validated)
    parsed["flags_text"]      # the flags as replayable lines for flags.txt

Flags are defined into a fresh `absl.flags.FlagValues` per parse (so experiments can be imported
and run side by side in one process, as the tests do); names, kinds, defaults and help come from
the fields. A bad value raises `UsageError` naming the flag, before any run folder exists.

An experiment module is then GROUPS and a few lines:

    Config = config.config_class(GROUPS, module=__name__, radii_into="training")
    config_from_argv = Config.from_argv          # argv -> a checked, frozen Config
    config.run_study(c, EXPERIMENT, "training", study.train_subspace, log=log, progress=progress)

(`prepare` alone where a run needs more than ``study(module, train, test, **options)``.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, ClassVar

from absl import flags

from gzone import data as data_lib
from gzone import models, options
from gzone.options import OptionError, option
from gzone.runs import records, stores


class UsageError(ValueError):
    """Bad flag value: the message starts with the flag's name."""

    def __init__(self, flag: str, message: str):
        super().__init__(f"--{flag}: {message}")
        self.flag = flag


# --------------------------------------------------------------------------- the command line's own groups


@dataclasses.dataclass(frozen=True, kw_only=True)
class Data(options.Group):
    dataset: str = option(
        "mnist1d", "mnist1d (generated, no data needed), or a name found as <data_dir>/<name>.npz or in tfds."
    )
    data_dir: str | None = option(
        None,
        "Folder of <name>.npz archives (uint8 x_train, y_train, x_test, y_test).",
        kind="str",
        setting=False,
    )
    tfds_data_dir: str | None = option(
        None, "tensorflow-datasets data folder with prepared array_record files.", kind="str", setting=False
    )
    n_train: int | None = option(
        None, "Use a deterministic random subset of this many training examples.", kind="int", minimum=1
    )
    n_test: int | None = option(
        None, "Use a deterministic random subset of this many test examples.", kind="int", minimum=1
    )
    num_classes: int | None = option(
        None,
        "Number of classes C (default: the largest label + 1, every class present in the training split).",
        kind="int",
        minimum=2,
    )
    input_scaling: str = option(
        "standardise",
        "Inputs: standardise: per-channel (x - mean) / std of the training split; unit_range: pixels "
        "0..255 to [-1, 1], (x / 255 - 0.5) / 0.5 per channel (uint8 datasets only).",
        choices=data_lib.SCALINGS,
        setting="changed",
    )

    def load(self) -> data_lib.Dataset:
        """The dataset in memory; its errors become one-line flag errors."""
        if self.data_dir is not None and not os.path.isdir(self.data_dir):
            raise UsageError("data_dir", f"folder {self.data_dir!r} does not exist")
        try:
            return data_lib.load(
                self.dataset,
                data_dir=self.data_dir,
                tfds_data_dir=self.tfds_data_dir,
                n_train=self.n_train,
                n_test=self.n_test,
                num_classes=self.num_classes,
                scaling=self.input_scaling,
            )
        except data_lib.DataError as err:
            message = str(err)  # a subset size out of range starts with its option ("n_train=...")
            starts = {"n_train": "n_train", "n_test": "n_test", "scaling": "input_scaling"}
            flag = next((f for p, f in starts.items() if message.startswith(f"{p}=")), "dataset")
            raise UsageError(flag, str(err)) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Model(options.Group):
    """The network: a built-in architecture (`gzone.models`) or your own flax module's factory."""

    model: str = option(
        "mlp",
        f"Network: a built-in name ({', '.join(models.MODEL_KINDS)}) or package.module:factory, "
        "factory(num_classes) returning a flax.linen Module, imported from PYTHONPATH.",
    )
    widths: tuple[int, ...] | None = option(
        None,
        "Widths of a built-in model (unset or empty: its standard ones): hidden widths (mlp 200,200, "
        "lenet300_100 300,100; empty for mlp: a linear classifier), conv channels (cnn_fs 16,16, "
        "small_cnn 32,64,64), lenet5 conv channels then dense widths (6,16,120,84), resnet20 stage "
        "widths (16,32,64), vit_tiny embedding and MLP widths (64,128).",
        kind="ints",
        minimum=1,
        empty=True,
    )
    activation: str = option("relu", "Nonlinearity of a built-in model.", choices=tuple(models.ACTIVATIONS))
    use_bias: bool = option(
        True,
        "Biases in every layer (mlp, lenet300_100, cnn_fs, small_cnn, lenet5); without them a relu "
        "network is positively homogeneous in theta.",
    )
    width_multiplier: float = option(
        1.0, "Scales every width of a built-in model (resnet20 at 0.25: stage widths 4,8,16).", minimum=0
    )

    def _check(self):
        if self.is_factory:
            try:
                models.load_factory(self.model)
            except ValueError as err:
                raise OptionError("model", str(err)) from None
            for name, default in (("widths", None), ("use_bias", True), ("width_multiplier", 1.0),
                                  ("activation", "relu")):
                if getattr(self, name) not in (default, ()):  # an empty flag is unset
                    raise OptionError(name, f"applies to built-in models, not to the factory {self.model}")
            return
        if self.model not in models.MODEL_KINDS:
            raise OptionError(
                "model",
                f"{self.model!r} unknown; allowed: {', '.join(models.MODEL_KINDS)} or package.module:factory",
            )
        try:
            self.spec
        except ValueError as err:
            flag = next((n for n in ("use_bias", "width_multiplier") if n in str(err)), "widths")
            raise OptionError(flag, str(err)) from None

    @property
    def is_factory(self) -> bool:
        return ":" in self.model

    @property
    def spec(self) -> models.ModelSpec:
        standard = self.widths is None or (not self.widths and self.model != "mlp")  # mlp, empty: linear
        widths = models.default_widths(self.model) if standard else self.widths
        return models.ModelSpec(
            self.model, tuple(widths), self.activation, self.use_bias, self.width_multiplier
        )

    def build(self, num_classes: int):
        """The flax module (a factory's errors become one-line `--model` errors)."""
        if not self.is_factory:
            return models.build(self.spec, num_classes)
        try:
            return models.from_factory(self.model, num_classes)
        except ValueError as err:
            raise UsageError("model", str(err)) from None

    @property
    def label(self) -> str:
        if self.is_factory:
            return "".join(c if c.isalnum() or c in "-." else "-" for c in self.model.rsplit(":", 1)[-1])
        bias = "" if self.use_bias else "-nobias"
        return f"{self.model}{'-'.join(str(w) for w in self.spec.scaled_widths) or 'linear'}{bias}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RadiusGrid(options.Group):
    """The radius flags: a log grid start,stop,num of log10(r^2/r_X^2), or absolute radii.

    A subclass with ``radii_required = False`` accepts neither (the study then checks whether it
    needs radii; `kwargs` gives none).
    """

    radii_required: ClassVar[bool] = True

    log10_r2_over_rx2: tuple[float, ...] | None = option(
        None,
        "Radii as start,stop,num of log10(r^2/r_X^2), e.g. -4,4,17 (empty: unset).",
        kind="floats",
        empty=True,
    )
    radii: tuple[float, ...] | None = option(
        None,
        "Absolute radii |theta| (alternative to --log10_r2_over_rx2; empty: unset).",
        kind="floats",
        empty=True,
    )

    def _check(self):
        for name in ("log10_r2_over_rx2", "radii"):  # an empty flag unsets what a flagfile gave
            if getattr(self, name) == ():
                object.__setattr__(self, name, None)
        given = (self.log10_r2_over_rx2 is not None) + (self.radii is not None)
        if given > 1 or (not given and self.radii_required):
            raise OptionError(
                "log10_r2_over_rx2",
                "give exactly one of --log10_r2_over_rx2=start,stop,num or --radii=r1,r2,...",
            )
        spec = self.log10_r2_over_rx2
        if spec is not None and (len(spec) != 3 or spec[2] < 1 or spec[2] != int(spec[2])):
            raise OptionError(
                "log10_r2_over_rx2",
                f"expected start,stop,num with num a positive integer, got "
                f"{','.join(f'{v:g}' for v in spec)}",
            )

    def kwargs(self) -> dict:
        """The library's `options.Radii` arguments."""
        if self.radii is None and self.log10_r2_over_rx2 is None:
            return {}
        if self.radii is not None:
            return {"radii": self.radii}
        start, stop, num = (
            self.log10_r2_over_rx2[0],
            self.log10_r2_over_rx2[1],
            int(self.log10_r2_over_rx2[2]),
        )
        values = tuple(start + (stop - start) * i / (num - 1) for i in range(num)) if num > 1 else (start,)
        return {"log10_r2_over_rx2": values}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Output(options.Group):
    workdir: str = option(
        "runs", "Root folder of run folders: <workdir>/<experiment>/<name>/.", setting=False
    )
    name: str | None = option(
        None, "Run name (default: derived from the settings of the run).", kind="str", setting=False
    )
    overwrite: bool = option(
        False, "Replace an existing run folder with other settings.", setting=False, replay=False
    )
    plots: bool = option(True, "Draw the figures at the end.", setting=False)

    def folder(
        self, experiment: str, default_name: str, flags_text: str, context: dict | None = None
    ) -> stores.RunFolder:
        path = records.run_path(self.workdir, experiment, self.name or default_name)
        return stores.RunFolder(path, overwrite=self.overwrite, flags_text=flags_text, context=context)

    def report(self, result, log) -> str:
        """Prints the result's table and draws its figures (process 0 of a split run); returns the folder."""
        from gzone import plots
        from gzone.runs import processes

        index, count = processes.current()
        if index != 0:
            log(f"process {index} of {count}: its units are in {result.path}; process 0 assembles the run")
            return result.path
        log(result.table())
        if self.plots:
            for figure in plots.draw(result.path):
                log(f"figure: {figure}")
        log(f"records: {result.path}")
        return result.path


@dataclasses.dataclass(frozen=True, kw_only=True)
class Processes(options.Group):
    """A run split over processes (jax.distributed): none of these flags, or all three."""

    coordinator_address: str | None = option(
        None,
        "HOST:PORT of the jax.distributed coordinator (process 0's host); "
        "with --num_processes and --process_id. None given: automatic in a "
        "SLURM / Open MPI / TPU-pod job, else one process.",
        kind="str",
        setting=False,
        replay=False,
    )
    num_processes: int | None = option(
        None,
        "Processes sharing the run (each computes its share of the units).",
        kind="int",
        minimum=1,
        setting=False,
        replay=False,
    )
    process_id: int | None = option(
        None,
        "This process's index in [0, --num_processes).",
        kind="int",
        minimum=0,
        setting=False,
        replay=False,
    )

    def initialize(self) -> tuple[int, int]:
        """Joins the other processes (before anything touches a JAX backend); (index, count)."""
        from gzone.runs import processes

        try:
            return processes.initialize(self.coordinator_address, self.num_processes, self.process_id)
        except ValueError as err:
            raise UsageError(
                "process_id" if "process_id" in str(err) else "coordinator_address", str(err)
            ) from None


# --------------------------------------------------------------------------- flags from fields


def _define(fv: flags.FlagValues, field: dataclasses.Field) -> None:
    meta, name, default = field.metadata, field.name, field.default
    kind, help_ = meta["kind"], meta["help"]
    if kind == "bool":
        flags.DEFINE_bool(name, default, help_, flag_values=fv)
    elif kind == "int":
        flags.DEFINE_integer(name, default, help_, flag_values=fv)
    elif kind == "float":
        flags.DEFINE_float(name, default, help_, flag_values=fv)
    elif kind == "str" and meta["choices"]:
        flags.DEFINE_enum(name, default, list(meta["choices"]), help_, flag_values=fv)
    elif kind == "str":
        flags.DEFINE_string(name, default, help_, flag_values=fv)
    else:
        shown = None if default is None else [str(v) for v in default]
        flags.DEFINE_list(name, shown, help_, flag_values=fv)


def flag_fields(group: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(group) if f.metadata.get("flag", False)]


def define_flags(groups: dict[str, type]) -> flags.FlagValues:
    """A FlagValues with one flag per field of each group (a name may appear in one group only)."""
    fv = flags.FlagValues()
    owner: dict[str, str] = {}
    for key, group in groups.items():
        for field in flag_fields(group):
            if field.name in owner:
                raise ValueError(f"flag --{field.name} defined by groups {owner[field.name]} and {key}")
            owner[field.name] = key
            _define(fv, field)
    return fv


def parse(argv: list[str], *, extra: dict[str, dict] | None = None, **groups: type) -> dict[str, Any]:
    """Parses argv (without the program name) into the groups.

    Args:
      argv: the command-line arguments, e.g. ``["--flagfile=f.flags", "--dims=10"]``.
      extra: per group, keyword arguments added to its flags' values (e.g. the radius grid's values).
      **groups: name -> options dataclass.

    Returns:
      dict: each name -> its group built from the flags, and ``flags_text``.

    Raises:
      UsageError: a flag is unknown, malformed or has a bad value (the message names it).
    """
    fv = define_flags(groups)
    try:
        rest = fv(["gzone", *argv])
    except flags.Error as err:
        raise UsageError(
            "flags", (str(err).splitlines()[0] if str(err) else "bad flags").replace("ERROR:: ", "")
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError("flagfile", f"cannot read flags: {err}") from None
    if len(rest) > 1:
        raise UsageError(
            "flags", f"unexpected positional arguments: {' '.join(rest[1:])} (flags look like --name=value)"
        )
    return build(fv, groups, extra=extra)


def build(
    fv: flags.FlagValues, groups: dict[str, type], *, extra: dict[str, dict] | None = None
) -> dict[str, Any]:
    """The groups built from parsed flag values (see `parse`)."""
    out: dict[str, Any] = {}
    extra = extra or {}
    for key, group in groups.items():
        values = {f.name: fv[f.name].value for f in flag_fields(group)}
        kwargs = extra.get(key, {})
        out[key] = make(group, {**values, **(kwargs(out) if callable(kwargs) else kwargs)})
    out["flags_text"] = flags_text(fv, groups)
    return out


def make(group: type, values: dict):
    """group(**values), an `OptionError` becoming a `UsageError` on the same name."""
    try:
        return group(**values)
    except OptionError as err:
        raise UsageError(err.name, err.message) from None


def flags_text(fv: flags.FlagValues, groups: dict[str, type]) -> str:
    """The flags as replayable ``--name=value`` lines (unset ones and non-replayed ones left out)."""
    lines = []
    for group in groups.values():
        for field in flag_fields(group):
            value = fv[field.name].value
            if value is None or not field.metadata.get("replay", True):
                continue
            if isinstance(value, bool):
                lines.append(f"--{field.name}" if value else f"--no{field.name}")
            elif isinstance(value, (list, tuple)):
                lines.append(f"--{field.name}={','.join(str(v) for v in value)}")
            else:
                lines.append(f"--{field.name}={value}")
    return "\n".join(lines) + "\n"


def default_name(label: str, *groups) -> str:
    """``<label>_<digest>`` with a digest of the groups' settings: another setting, another default name."""
    settings = [options.settings(g) for g in groups]
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{label}_{digest}"


def enable_x64_if(dtype: str) -> None:
    """float64 for the whole process (the command line's way; set before anything is traced)."""
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)


# --------------------------------------------------------------------------- config and prologue of a run


class ExperimentConfig:
    """Base of an experiment's Config (made by `config_class`): its groups by name and ``flags_text``."""

    GROUPS: ClassVar[dict[str, type]] = {}
    RADII_INTO: ClassVar[str | None] = None

    @classmethod
    def from_argv(cls, argv: list[str]):
        """The flags (e.g. ``["--flagfile=experiments/flagfiles/smoke.flags"]``) as a checked Config."""
        extra = {cls.RADII_INTO: lambda built: built["radii"].kwargs()} if cls.RADII_INTO else None
        return cls(**parse(argv, extra=extra, **cls.GROUPS))

    def groups(self) -> list:
        """The groups that name a run (all but output and processes), in the order of GROUPS."""
        values = (getattr(self, key) for key in self.GROUPS)
        return [g for g in values if not isinstance(g, (Output, Processes))]


def config_class(groups: dict[str, type], *, module: str, radii_into: str | None = None) -> type:
    """A frozen dataclass ``Config``: one field per group (``c.data``, ``c.model``, ...) and ``flags_text``.

    Args:
      groups: the experiment's GROUPS, name -> options dataclass.
      module: the experiment module's ``__name__`` (where the class says it lives).
      radii_into: the group that takes the radius grid's values (`RadiusGrid.kwargs`), if any.
    """
    fields = [*groups.items(), ("flags_text", str)]
    namespace = {"GROUPS": dict(groups), "RADII_INTO": radii_into}
    cls = dataclasses.make_dataclass("Config", fields, bases=(ExperimentConfig,), namespace=namespace,
                                     frozen=True)
    cls.__module__ = module
    return cls


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What an experiment's run starts from (see `prepare`)."""

    dataset: data_lib.Dataset
    module: Any
    folder: stores.RunFolder
    options: dict
    context: dict

    @property
    def train(self) -> tuple:
        return self.dataset.x_train, self.dataset.y_train

    @property
    def test(self) -> tuple:
        return self.dataset.x_test, self.dataset.y_test


def prepare(
    c: ExperimentConfig,
    experiment: str,
    options_key: str,
    *,
    activation_in_name: bool = False,
    context: Callable[[data_lib.Dataset], dict] | None = None,
) -> Prepared:
    """The prologue of an experiment's run: processes joined, float64 if asked, data, module, run folder.

    Args:
      c: the experiment's Config.
      experiment: its name (runs go to <workdir>/<experiment>/<name>/).
      options_key: the Config's group of study options (its ``dtype``; its fields are `Prepared.options`).
      activation_in_name: the default run name starts <dataset>_<model>_<activation>, not <dataset>_<model>.
      context: called with the dataset before the module is built (it may raise `UsageError`): more
        context for the run folder, also in `Prepared.context`.

    Returns:
      `Prepared`: the dataset, the flax module, the run folder and the study options as keyword arguments.
    """
    c.processes.initialize()
    opts = getattr(c, options_key)
    enable_x64_if(opts.dtype)
    dataset = c.data.load()
    extra = context(dataset) if context is not None else {}
    module = c.model.build(dataset.num_classes)
    label = f"{dataset.name}_{c.model.label}" + (f"_{c.model.activation}" if activation_in_name else "")
    folder = c.output.folder(experiment, default_name(label, *c.groups()), c.flags_text,
                             context={"dataset": dataset.describe(), **extra})
    return Prepared(dataset, module, folder, dataclasses.asdict(opts), extra)


def run_study(
    c: ExperimentConfig,
    experiment: str,
    options_key: str,
    study: Callable,
    *,
    log: Callable,
    progress: Callable,
    activation_in_name: bool = False,
) -> str:
    """An experiment's run: `prepare`, ``study(module, train, test, run_dir=, log=progress, **options)``,
    then `Output.report` of its result through `log`; returns the run folder."""
    p = prepare(c, experiment, options_key, activation_in_name=activation_in_name)
    result = study(p.module, p.train, p.test, run_dir=p.folder, log=progress, **p.options)
    return c.output.report(result, log)
