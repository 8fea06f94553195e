from meterd.cli import main

raise SystemExit(main())
