"""`make bench` / `python -m bench [name ...]`: run the benchmarks and print their ratios.

`python -m bench outcome` (the default pipeline on every sample SEM, about 15 minutes) runs
only when named."""

import importlib
import sys

BENCHES = ["forge_throughput", "generation_speed", "train_speed"]

if __name__ == "__main__":
    for name in sys.argv[1:] or BENCHES:
        importlib.import_module(f"bench.{name}").main()
