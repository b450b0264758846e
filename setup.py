"""Build the Cython engine.  Compiler directives live here, once (STYLE §8).

DCDMAP_DEBUG=1 at build time turns on bounds checks and the engine's invariant checks
after every mutation:  DCDMAP_DEBUG=1 pip install -e .
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("DCDMAP_DEBUG", "0") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
    "binding": True,
    "autotestdict": False,
}
macros = [("DCDMAP_DEBUG", "1" if DEBUG else "0"), ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]

MODULES = ["_sort", "extentmap", "compose", "tagview", "sharing"]

extensions = [
    Extension(f"dcdmap._core.{name}", [f"dcdmap/_core/{name}.pyx"],
              include_dirs=["dcdmap/_core"], define_macros=macros, extra_compile_args=compile_args)
    for name in MODULES
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives,
                            build_dir="build/cython-debug" if DEBUG else "build/cython"))
