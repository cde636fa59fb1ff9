"""Build script. The Python package needs no compilation; the optional compiled
extension (csrc/) is added by `lowprec_build.extensions()` when it can be built."""

from setuptools import setup

PACKAGES = ["lowprec", "lowprec.planner", "lowprec.kernels"]

setup(
    packages=PACKAGES,
    # Triton kernels live in kernels/ at the top of the tree (project layout) and are
    # installed as the subpackage lowprec.kernels.
    package_dir={"lowprec.kernels": "kernels"},
)
