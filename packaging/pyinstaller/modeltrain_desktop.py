"""PyInstaller entry script of the desktop app (same as ``python -m desktop`` / ``modeltrain-desktop``)."""

import sys

from desktop.app import main

if __name__ == "__main__":
    sys.exit(main())
