"""`mlflow run . -e sweep -P sem=NAME [-P overrides="k=v ..."]` runs this, i.e. `opensem sweep`."""
import sys

from opensem.cli import main

main(["sweep", *sys.argv[1:]])
