"""``python -m wanr2v.testing``: serve an emulator until Ctrl-C."""

import sys

from wanr2v.testing._cli import main

sys.exit(main())
