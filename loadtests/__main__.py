"""``python -m loadtests SCENARIO --url ws://127.0.0.1:8765/ws`` (see loadtests.cli)."""

import sys

from loadtests.cli import main

sys.exit(main())
