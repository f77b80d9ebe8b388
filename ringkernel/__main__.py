"""``python -m ringkernel``: the command line (see ringkernel.cli)."""

from .cli import main

raise SystemExit(main())
