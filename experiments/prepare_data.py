r"""Writes <out_dir>/<dataset>.npz (uint8 x_train, y_train, x_test, y_test; images NHWC).

Prepare once on a machine with internet, then run anywhere offline with --data_dir=<out_dir>:

    pip install 'gzone[prepare]'     # tensorflow-cpu: tfds needs it to download and encode images
    python -m experiments.prepare_data --dataset=cifar10 --out_dir=$HOME/gzone_data

A dataset already prepared in tfds's array_record format (--tfds_data_dir) is converted without
tensorflow.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import flags

from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "mnist", "tfds dataset name with 'image' and 'label' features (mnist, fashion_mnist, cifar10, ...).")
flags.DEFINE_string("out_dir", None, "Folder to write <dataset>.npz into.")
flags.DEFINE_string("tfds_data_dir", None, "tfds data folder (download cache / prepared array_record files).")
flags.DEFINE_bool("overwrite", False, "Replace an existing archive.")


def from_data_source(name: str, tfds_data_dir: str | None):
    """Reads a prepared array_record dataset (no tensorflow needed); raises if not prepared."""
    import tensorflow_datasets as tfds

    splits = tfds.data_source(name, data_dir=tfds_data_dir, download=False)
    out = {}
    for split in ("train", "test"):
        source = splits[split]
        out[f"x_{split}"] = np.stack([np.asarray(source[i]["image"]) for i in range(len(source))])
        out[f"y_{split}"] = np.asarray([int(source[i]["label"]) for i in range(len(source))])
    return out


def from_download(name: str, tfds_data_dir: str | None):
    """Downloads and prepares with tfds (needs tensorflow and internet)."""
    try:
        import tensorflow  # noqa: F401  (tfds.load needs it)
    except ImportError:
        cli.fail("downloading needs tensorflow: pip install 'gzone[prepare]' (or pass --tfds_data_dir with the dataset already prepared)")
    import tensorflow_datasets as tfds

    out = {}
    for split in ("train", "test"):
        x, y = tfds.as_numpy(tfds.load(name, split=split, batch_size=-1, as_supervised=True, data_dir=tfds_data_dir))
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


def main(argv):
    del argv
    if not FLAGS.out_dir:
        raise cli.UsageError("out_dir", "required: the folder to write <dataset>.npz into")
    from gzone import data

    path = os.path.join(FLAGS.out_dir, f"{FLAGS.dataset}.npz")
    if os.path.exists(path) and not FLAGS.overwrite:
        print(f"{path} exists (pass --overwrite to replace it)")
        return
    try:
        arrays = from_data_source(FLAGS.dataset, FLAGS.tfds_data_dir)
        source = "prepared array_record files"
    except Exception as err:  # not prepared locally: fall back to downloading
        print(f"no prepared copy ({str(err).splitlines()[0][:120]}); downloading with tfds", file=sys.stderr)
        arrays = from_download(FLAGS.dataset, FLAGS.tfds_data_dir)
        source = "tfds download"
    for key in ("x_train", "x_test"):
        if arrays[key].ndim == 3:  # [N, H, W] -> NHWC
            arrays[key] = arrays[key][..., None]
    data.save_npz(path, **arrays)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())
    print(f"wrote {path} from {source}: {shapes}")


if __name__ == "__main__":
    cli.run(main)
