"""`python -m nld_cpp.server`: the same as the `nld-server` command."""

import sys

from . import main

sys.exit(main())
