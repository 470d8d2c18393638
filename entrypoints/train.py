"""`mlflow run . -e train -P sem=NAME [-P overrides="k=v ..."]` runs this, i.e. `opensem train`."""
import sys

from opensem.cli import main

main(["train", *sys.argv[1:]])
