"""`python -m sim`: the bundled simulator without the agent (see sim/MANUAL.md)."""

import sys

from sim.runner import main

sys.exit(main())
