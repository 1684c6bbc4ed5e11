"""`python -m kb ...`: the knowledge-base commands on their own."""

from kb.cli import main

raise SystemExit(main())
