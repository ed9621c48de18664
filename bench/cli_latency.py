"""How long `swap --help` and `swap validate` take, from a fresh process each time (the 0.5 s
target), against a bare `python -c pass` measured in the same run.

Run: .venv/bin/python bench/cli_latency.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from measure import RESULTS, describe_machine, machine, summary, write_results

REPO = Path(__file__).resolve().parent.parent
SWAP = str(Path(sys.executable).parent / "swap")
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "swap --help": [SWAP, "--help"],
    "swap validate configs/quickstart.yaml": [SWAP, "validate", "configs/quickstart.yaml"],
    "swap validate --defaults": [SWAP, "validate", "--defaults"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    host = machine()
    print(describe_machine(host))
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):  # interleaved: the machine's noise falls on every command
        for name, argv in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(argv, cwd=REPO, check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - started)
    stats = {name: summary(values) for name, values in seconds.items()}
    print(f"{'command':<40} {'n':>3} {'median s':>9} {'mean ± std s':>15}")
    for name, s in stats.items():
        print(f"{name:<40} {s['n']:>3} {s['median']:>9.3f} {s['mean']:>7.3f} ± {s['std']:.3f}")
    write_results(args.out / "cli_latency.json", host, seconds=seconds, summary=stats)


if __name__ == "__main__":
    main()
