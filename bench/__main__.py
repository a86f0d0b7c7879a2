"""``python -m bench``: see ``bench/run.py`` (scenarios.py, driver.py, report.py)."""

from bench.run import main

raise SystemExit(main())
