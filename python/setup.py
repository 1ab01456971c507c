"""Builds the vlreward package: the extension links the project's static library.

From the repository (`make python`, or `pip install --no-build-isolation ./python`), the library is
build/libvlreward.a next to this folder, built with `make` when missing. VLREWARD_INCLUDE and
VLREWARD_LIB (a folder holding libvlreward.a or libvlreward.so) name an installed one instead.
"""
import os
import subprocess

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
os.chdir(HERE)  # setuptools takes the source paths below relative to the current directory
# the Debian packages the library itself links (the Makefile's LIB_PKGS)
LIB_PKGS = ["libjpeg", "libpng", "libwebp", "libcurl", "libutf8proc"]


def version():
    with open(os.path.join(include_dir(), "vlreward.h")) as f:
        for line in f:
            if line.startswith("#define VLR_VERSION "):
                return line.split('"')[1]
    raise RuntimeError("VLR_VERSION not found in vlreward.h")


def include_dir():
    return os.environ.get("VLREWARD_INCLUDE") or os.path.join(ROOT, "include")


def pkg_libs():
    try:
        out = subprocess.run(["pkg-config", "--libs"] + LIB_PKGS, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = "-ljpeg -lpng16 -lwebp -lcurl -lutf8proc"
    return out.split()


def link_args():
    lib = os.environ.get("VLREWARD_LIB")
    if lib:
        static = os.path.join(lib, "libvlreward.a")
        if os.path.exists(static):
            return [static] + pkg_libs() + ["-fopenmp", "-lm", "-lpthread"]
        return ["-L" + lib, "-Wl,-rpath," + lib, "-lvlreward"]
    build = os.environ.get("VLREWARD_BUILD") or os.path.join(ROOT, "build")
    static = os.path.join(build, "libvlreward.a")
    if not os.path.exists(static):
        subprocess.run(["make", "-C", ROOT, "BUILD=" + build, static], check=True)
    return [static] + pkg_libs() + ["-fopenmp", "-lm", "-lpthread"]


setup(
    name="vlreward",
    version=version(),
    description="Skywork-VL-Reward scores from Python, over the vlreward C library",
    packages=["vlreward", "vlreward.integrations"],
    ext_modules=[
        Extension(
            "vlreward._vlreward",
            sources=["vlreward/_vlreward.c"],
            include_dirs=[include_dir()],
            extra_compile_args=["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers"],
            extra_link_args=link_args(),
        )
    ],
    python_requires=">=3.8",
)
