from arqond.app import main

raise SystemExit(main())
