"""Files of a run folder: atomic writes (temp file, fsync, rename), archives read back whole or not at all,
JSON without NaN, and the temp files a killed writer leaves.

A write goes to ``<name>.tmp<pid>`` in the target's folder, is fsynced and renamed onto the target: a
reader sees the old file or the new one, never half of one; a write that fails removes its temp file.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
import zlib
from typing import Any

import numpy as np


class DamagedFile(RuntimeError):
    """A file of a run folder cannot be read back (truncated, corrupt, or not what it should be)."""


def write_then_rename(path: str, tmp: str, write) -> None:
    """write(fh) into `tmp`, fsync, rename onto `path`; on any failure the temp file is removed and the
    old `path` (if any) is left as it was."""
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    write_then_rename(path, f"{path}.tmp{os.getpid()}", lambda fh: fh.write(data))


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n").encode())


def atomic_save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """np.savez of numeric arrays (no object arrays, so never a pickle), atomically."""
    tmp = f"{path}.tmp{os.getpid()}.npz"
    clean = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in clean.items():
        if v.dtype == object:
            raise TypeError(f"array {k!r} has dtype object; records hold numeric arrays only")
    write_then_rename(path, tmp, lambda fh: np.savez(fh, **clean))


def verify_npz(path: str) -> str | None:
    """None when the archive at `path` reads whole (every member's CRC checks), else what is wrong."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        return None if bad is None else f"member {bad} fails its CRC check"
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, zlib.error) as err:
        return f"{type(err).__name__}: {err}"


def load_npz(path: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz archive; `DamagedFile` when it cannot be read whole."""
    try:
        with (
            open(path, "rb") as fh,
            np.load(fh, allow_pickle=False) as archive,
        ):  # closed even if np.load fails
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, zlib.error) as err:
        raise DamagedFile(f"{path}: cannot be read ({type(err).__name__}: {err})") from err


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types; non-finite floats become None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if hasattr(obj, "tolist") and hasattr(obj, "shape"):  # jax arrays
        return to_jsonable(np.asarray(obj))
    return obj


def remove_stale_temp_files(path: str) -> list[str]:
    """Removes ``*.tmp<pid>*`` files under the run folder whose writing process is gone; returns them."""
    removed = []
    for folder in (path, os.path.join(path, "units")):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            m = _TEMP.search(name)
            if m and not _alive(int(m.group(1))):
                try:
                    os.remove(os.path.join(folder, name))
                    removed.append(os.path.join(folder, name))
                except OSError:
                    pass
    return removed


_TEMP = re.compile(r"\.tmp(\d+)")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
