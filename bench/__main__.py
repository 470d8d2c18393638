"""`make bench` / `python -m bench [name ...]` / `python -m bench NAME ARG ...`: run benchmarks.

With no name: the quick ones below. Several names: each with its defaults. One name followed by
arguments that are no bench: that bench with them (`python -m bench outcome sqlite --set
training.cpt_epochs=2`, `python -m bench forge_yield /path/to/corpus`). `outcome` (the default
pipeline on every sample SEM, 30 minutes or more) runs only when named."""

import importlib
import sys
from pathlib import Path

BENCHES = ["forge_throughput", "generation_speed", "train_speed"]


def _is_bench(name: str) -> bool:
    return name.isidentifier() and (Path(__file__).parent / f"{name}.py").is_file() and name not in ("common", "__main__")


if __name__ == "__main__":
    args = sys.argv[1:]
    if any(a in ("-h", "--help") for a in args):  # this page, or the named bench's
        named = [a for a in args if _is_bench(a)]
        print((importlib.import_module(f"bench.{named[0]}") if named else sys.modules[__name__]).__doc__.strip())
        sys.exit(0)
    if args and not _is_bench(args[0]):
        print(f"error: no benchmark named {args[0]!r}; the names are the files in bench/", file=sys.stderr)
        sys.exit(2)
    named_only = all(_is_bench(a) for a in args)
    for name in (args if named_only else args[:1]) or BENCHES:
        module = importlib.import_module(f"bench.{name}")
        module.main() if named_only else module.main(args[1:])
