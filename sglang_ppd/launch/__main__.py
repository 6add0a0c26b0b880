from sglang_ppd.launch.cli import main

raise SystemExit(main())
