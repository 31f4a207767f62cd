# SPDX-License-Identifier: MIT
"""Builds epcomm's Python package with CMake: the _epcomm module and libepcomm.so.0,
copied next to it (the module finds it through its $ORIGIN run path).

    pip install --no-build-isolation ./python

EPCOMM_CMAKE_ARGS adds configure arguments (word-split), EPCOMM_JOBS sets the
parallel build jobs (default 2)."""

import os
import re
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def project_version():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        return re.search(r"project\(epcomm VERSION ([0-9.]+)", f.read()).group(1)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = os.path.abspath(os.path.join(self.build_temp, "cmake"))
        configure = ["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release", "-DEPCOMM_BUILD_PYTHON=ON",
                     "-DEPCOMM_BUILD_TESTS=OFF", "-DEPCOMM_BUILD_BENCH=OFF", f"-DPython3_EXECUTABLE={sys.executable}"]
        configure += shlex.split(os.environ.get("EPCOMM_CMAKE_ARGS", ""))
        subprocess.check_call(configure)
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "_epcomm", "-j",
                               os.environ.get("EPCOMM_JOBS", "2")])
        module_dir = os.path.join(build_dir, "python", "epcomm")
        built = [f for f in os.listdir(module_dir) if f.startswith("_epcomm") and f.endswith(".so")]
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(module_dir, built[0]), target)
        # The library under its SONAME, resolved from the build tree's links.
        lib = os.path.realpath(os.path.join(build_dir, "runtime", "libepcomm.so.0"))
        shutil.copyfile(lib, os.path.join(os.path.dirname(target), "libepcomm.so.0"))


setup(
    version=project_version(),
    packages=["epcomm", "epcomm.compat"],
    ext_modules=[Extension("epcomm._epcomm", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
