#!/usr/bin/env bash
# Fetch into .whl/ the wheels a bare GPU machine (Python 3.12, x86-64, no package index)
# lacks for `bash bench/gpu_check.sh`: PuLP 4 with HiGHS, and what PuLP 4 imports
# (orloge -> cpsat-logutils -> pydantic). gpu_check.sh installs .whl/*.whl first.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  pulp highspy hypothesis sortedcontainers orloge cpsat-logutils pydantic pydantic-core \
  annotated-types typing-inspection typing-extensions
ls .whl
