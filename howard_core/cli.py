"""`howard` command line (placeholder until the pipeline lands)."""

import sys


def main(argv=None):
    print("howard: CLI not wired yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
