from sglang_ppd.workload.describe import main

raise SystemExit(main())
