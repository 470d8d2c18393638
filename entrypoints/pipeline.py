"""`mlflow run . -e pipeline -P sem=NAME [-P overrides="k=v ..."]` runs this, i.e. `opensem pipeline`."""
import sys

from opensem.cli import main

main(["pipeline", *sys.argv[1:]])
