"""`python -m toolkit` is `itops`."""

from toolkit.cli import main

main()
