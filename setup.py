"""Builds gzone's optional CPU kernels (gzone/_native.cc, XLA FFI handlers) with the package.

The kernels need jaxlib's FFI headers (a build requirement in pyproject.toml) and a C++17
compiler. Without a compiler the build goes on (`optional=True`) and gzone runs its plain-XLA
kernels instead (gzone.native.available() is then False).
"""

import os
import sys

from setuptools import Extension, setup


def _ffi_include() -> str:
    import jaxlib

    return os.path.join(os.path.dirname(jaxlib.__file__), "include")


args = ["-O3", "-std=c++17", "-fvisibility=hidden"] if sys.platform != "win32" else ["/O2", "/std:c++17"]
setup(ext_modules=[Extension("gzone._native", sources=["gzone/_native.cc"], include_dirs=[_ffi_include()],
                             extra_compile_args=args, language="c++", optional=True)])
