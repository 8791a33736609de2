from arqond.cli.main import main

raise SystemExit(main())
