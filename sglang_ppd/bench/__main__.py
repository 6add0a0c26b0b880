from sglang_ppd.bench.cli import main

raise SystemExit(main())
