#!/usr/bin/env bash
# One command for the first GPU machine: the GPU test suite, then images/s of each phase of a
# swap job against plain PyTorch on CIFAR-shaped synthetic data. Not yet run on a GPU: its
# duration is unmeasured (budgeted for 8 minutes on one GPU; the CPU smoke run takes ~2).
# Run: bash bench/gpu_check.sh        (from the repository, after `make test` created .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
"$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device here")'
"$python" -c 'import torch; print(f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")'
"$python" -m pytest -m gpu tests/integration/test_gpu.py -rs
"$python" bench/gpu_throughput.py
