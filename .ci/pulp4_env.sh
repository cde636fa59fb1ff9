#!/usr/bin/env bash
# Make a Python >= 3.12 virtual environment with PuLP 4.x and highspy (PuLP 4 requires
# Python >= 3.12; the project's interpreter may be older) and print its interpreter's path,
# for tests/planner/test_pulp_compat.py via LOWPREC_PULP4_PYTHON.
# Usage: LOWPREC_PULP4_PYTHON=$(bash .ci/pulp4_env.sh DIR)
set -euo pipefail
dir=${1:?usage: pulp4_env.sh DIR}
py=""
for candidate in python3.13 python3.12 \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c \
      'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    py=$(command -v "$candidate"); break
  fi
done
if [ -z "$py" ]; then
  echo "pulp4_env.sh: no Python >= 3.12 found (PuLP 4 needs one)" >&2
  exit 1
fi
"$py" -m venv "$dir" >&2
"$dir/bin/python" -m pip install -q -c "$(dirname "$0")/../constraints.txt" "pulp>=4,<5" highspy >&2
echo "$dir/bin/python"
