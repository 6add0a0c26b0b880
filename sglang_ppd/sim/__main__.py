"""``python -m sglang_ppd.sim ...`` is ``sglang-ppd sim ...``."""

from sglang_ppd.sim.cli import main

raise SystemExit(main())
