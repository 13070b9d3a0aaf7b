"""`python -m kubepci` runs the CLI."""

from kubepci.cli.main import main

if __name__ == "__main__":
    main()
