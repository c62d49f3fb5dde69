"""`python -m memory_service.cli`."""

import sys

from memory_service.cli.main import main

sys.exit(main())
