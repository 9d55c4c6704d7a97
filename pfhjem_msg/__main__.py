"""``python -m pfhjem_msg`` is the same as the ``pfhjem-msg`` command."""

import sys

from pfhjem_msg.cli import main

sys.exit(main())
