"""`mlflow run . -e promote -P sem=NAME [-P overrides="k=v ..."]` runs this, i.e. `opensem promote`."""
import sys

from opensem.cli import main

main(["promote", *sys.argv[1:]])
