#!/bin/sh
# Install the DictaMesh product wheel(s) found in DIST into a new virtualenv at VENV.
# The image runs exactly this (deploy/image/Dockerfile), and so does the wheel-install
# test (tests/packaging/test_wheel.py), which is how the image recipe is tested where no
# Docker daemon runs.
#   usage: install.sh DIST VENV [PYTHON]
set -eu
dist=$1
venv=$2
python=${3:-python3}
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check \
    "$dist"/dictamesh-[0-9]*.whl
# Bytecode now, so a read-only root filesystem never needs to write any.
"$venv/bin/python" -m compileall -q "$venv/lib" >/dev/null
