"""`mlflow run . -e baseline -P sem=NAME [-P overrides="k=v ..."]` runs this, i.e. `opensem baseline`."""
import sys

from opensem.cli import main

main(["baseline", *sys.argv[1:]])
