"""`python -m service` is the `handshake` command."""

from service.cli import main

raise SystemExit(main())
