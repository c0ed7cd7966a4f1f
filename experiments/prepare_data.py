r"""Writes <out_dir>/<dataset>.npz (uint8 x_train, y_train, x_test, y_test; images NHWC).

Prepare once on a machine with internet, then run anywhere offline with --data_dir=<out_dir>:

    pip install 'gzone[prepare]'     # tensorflow-cpu: tfds needs it to download and encode images
    python -m experiments.prepare_data --dataset=cifar10 --out_dir=$HOME/gzone_data

A dataset already prepared in tfds's array_record format (--tfds_data_dir) is converted without
tensorflow.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from experiments import cli, config
from gzone import options
from gzone.options import option


@dataclasses.dataclass(frozen=True, kw_only=True)
class Prepare(options.Group):
    dataset: str = option(
        "mnist", "tfds dataset name with 'image' and 'label' features (mnist, fashion_mnist, cifar10, ...)."
    )
    out_dir: str | None = option(None, "Folder to write <dataset>.npz into.", kind="str")
    tfds_data_dir: str | None = option(
        None, "tfds data folder (download cache / prepared array_record files).", kind="str"
    )
    overwrite: bool = option(False, "Replace an existing archive.")


GROUPS = {"prepare": Prepare}


def config_from_argv(argv: list[str]) -> Prepare:
    return config.parse(argv, **GROUPS)["prepare"]


def from_data_source(name: str, tfds_data_dir: str | None):
    """Reads a prepared array_record dataset (no tensorflow needed); raises if not prepared."""
    from gzone import data

    return dict(zip(("x_train", "y_train", "x_test", "y_test"), data.load_tfds_arrays(name, tfds_data_dir)))


def from_download(name: str, tfds_data_dir: str | None):
    """Downloads and prepares with tfds (needs tensorflow and internet)."""
    try:
        import tensorflow  # noqa: F401  (tfds.load needs it)
    except ImportError:
        raise config.UsageError(
            "tfds_data_dir",
            "downloading needs tensorflow: pip install 'gzone[prepare]' (or pass "
            "--tfds_data_dir with the dataset already prepared)",
        ) from None
    import tensorflow_datasets as tfds

    out = {}
    for split in ("train", "test"):
        x, y = tfds.as_numpy(
            tfds.load(name, split=split, batch_size=-1, as_supervised=True, data_dir=tfds_data_dir)
        )
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


def run(c: Prepare, log=print) -> str | None:
    """Writes the archive (unless it exists and not --overwrite); returns its path."""
    if not c.out_dir:
        raise config.UsageError("out_dir", "required: the folder to write <dataset>.npz into")
    from gzone import data

    path = os.path.join(c.out_dir, f"{c.dataset}.npz")
    if os.path.exists(path) and not c.overwrite:
        log(f"{path} exists (pass --overwrite to replace it)")
        return path
    try:
        arrays = from_data_source(c.dataset, c.tfds_data_dir)
        source = "prepared array_record files"
    except Exception as err:  # not prepared locally: fall back to downloading
        print(f"no prepared copy ({str(err).splitlines()[0][:120]}); downloading with tfds", file=sys.stderr)
        arrays = from_download(c.dataset, c.tfds_data_dir)
        source = "tfds download"
    for key in ("x_train", "x_test"):
        if arrays[key].ndim == 3:  # [N, H, W] -> NHWC
            arrays[key] = arrays[key][..., None]
    data.save_npz(path, **arrays)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
    log(f"wrote {path} from {source}: {shapes}")
    return path


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
