"""``python -m rag.cli``: the ``rag`` command."""

import sys

from . import main

sys.exit(main())
