#!/usr/bin/env bash
# The GPU check in one command (bench/gpu_check.py): the bundle installed, then each step timed.
# Run: bash bench/gpu_check.sh OUT_DIR   (on the GPU host: its python3, this repository, gpu-bundle/)
#      bash bench/gpu_check.sh --cpu OUT_DIR   (the rehearsal on a CPU machine; docs/development.md)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
