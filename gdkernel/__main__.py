"""`python -m gdkernel`: the command line (see `gdkernel.cli`)."""

from .cli import main

raise SystemExit(main())
