"""Build the optional C extension ggtool._native.

A failed compiler never breaks the install: the package falls back to the numpy reference
(markupsafe's BuildFailed pattern). GGTOOL_PUREPYTHON=1 skips the extension entirely.
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE_SOURCES = sorted(
    os.path.join("native", f) for f in os.listdir("native") if f.endswith(".c")
)


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # compiler missing or broken
            print(f"WARNING: ggtool C extension not built ({exc}); using numpy.", file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"WARNING: ggtool C extension not built ({exc}); using numpy.", file=sys.stderr)


ext_modules = []
if os.environ.get("GGTOOL_PUREPYTHON") != "1":
    ext_modules.append(
        Extension(
            "ggtool._native",
            sources=NATIVE_SOURCES,
            include_dirs=["native"],
            # Byte-identical to numpy needs IEEE float32 arithmetic in source order:
            # no -ffast-math, no FMA contraction.
            extra_compile_args=["-O2", "-std=c99", "-ffp-contract=off", "-fno-fast-math"],
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
