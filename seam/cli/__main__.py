"""`python -m seam.cli`: the same as the `seam` console script."""
from seam.cli import main

main()
