"""`python -m bench` is the same as the `maas-bench` console script."""

from bench.cli.app import main

if __name__ == "__main__":
    main()
