"""`mlflow run . -e evaluate -P sem=NAME [-P overrides="k=v ..."]` runs this, i.e. `opensem evaluate`."""
import sys

from opensem.cli import main

main(["evaluate", *sys.argv[1:]])
