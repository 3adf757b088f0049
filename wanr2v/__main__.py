"""``python -m wanr2v``: the ``wanr2v`` command (see ``python -m wanr2v --help``)."""

import sys

from wanr2v._cli import main

if __name__ == "__main__":
    sys.exit(main())
