"""`mlflow run . -e report -P sem=NAME [-P overrides="k=v ..."]` runs this, i.e. `opensem report`."""
import sys

from opensem.cli import main

main(["report", *sys.argv[1:]])
