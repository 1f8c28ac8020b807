"""`python -m sandbox.cli`."""

from sandbox.cli import main

main()
