"""`mlflow run . -e prefer -P sem=NAME [-P overrides="k=v ..."]` runs this, i.e. `opensem prefer`."""
import sys

from opensem.cli import main

main(["prefer", *sys.argv[1:]])
