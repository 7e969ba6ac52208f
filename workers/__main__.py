"""``python -m workers``: the ``actionstream`` command (:mod:`workers.console.cli`)."""

from workers.console.cli import main

raise SystemExit(main())
