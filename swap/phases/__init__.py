"""The three phases. For each, `phaseN.py` places the work on Ray (one screen, no math) and the
file beside it does the work: `phase1_worker.py` (one DDP rank's loop, on Ray Train),
`phase2_worker.py` (one independent worker, no Ray), `phase3_coordinator.py` (average, refresh
BatchNorm, evaluate; no Ray). `ddp.py` holds phase 1's collectives, `placement.py` what each
worker asks Ray for.

Run: swap run configs/quickstart.yaml
"""
