"""``python -m polydiff_graphs ...``: the same as ``polydiff graphs ...`` (see :mod:`.cli`)."""

import sys

from polydiff.plugin import plugin_command

if __name__ == "__main__":
    sys.exit(plugin_command("graphs", sys.argv[1:]))
