"""``python -m convlens`` runs the CLI."""

from convlens.cli import main

raise SystemExit(main())
