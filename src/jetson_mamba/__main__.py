"""`python -m jetson_mamba` is the same as the `jetson-mamba` console script."""

from jetson_mamba.cli import main

raise SystemExit(main())
