"""`python -m edge_agent.cli`: the same as the `edge-agent` script."""

import sys

from edge_agent.cli.app import main

sys.exit(main())
