"""``python -m research_app ...`` runs the ``research-env`` command line."""

from research_app.cli import main

raise SystemExit(main())
