"""`python -m swap ...` is the same as the `swap` command.

Run: python -m swap run configs/quickstart.yaml
"""

from swap.cli import main

raise SystemExit(main())
