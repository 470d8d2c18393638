"""`mlflow run . -e forge -P sem=NAME [-P overrides="k=v ..."]` runs this, i.e. `opensem forge`."""
import sys

from opensem.cli import main

main(["forge", *sys.argv[1:]])
