"""`make bench` / `python -m bench [name ...]`: run the benchmarks and print their ratios."""

import importlib
import sys

BENCHES = ["forge_throughput", "generation_speed", "train_speed"]

if __name__ == "__main__":
    for name in sys.argv[1:] or BENCHES:
        importlib.import_module(f"bench.{name}").main()
