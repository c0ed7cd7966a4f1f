"""The environment of a run, for config.json: versions, devices, the git revision, the command."""

from __future__ import annotations

import os
import platform
import subprocess
import sys


def describe() -> dict:
    """Versions, devices and the git revision, for config.json."""
    import jax

    from gzone import native

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for module in ("jax", "jaxlib", "flax", "optax", "numpy", "scipy"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # a missing optional package is recorded as absent
            versions[module] = None
    return {
        "versions": versions,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "x64": bool(jax.config.jax_enable_x64),
        "native_kernels": native.enabled(),  # gzone/_native.cc on CPU (gzone.native)
        "git": git_revision(),
        "argv": sys.argv,
    }


def git_revision() -> dict | None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None
