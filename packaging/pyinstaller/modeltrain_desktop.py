"""PyInstaller entry script: the desktop app (as ``python -m desktop`` / ``modeltrain-desktop``), or the
server's command line when the binary is started under the name ``modeltrain`` (the Linux package links
``/usr/bin/modeltrain`` to it), so one bundle carries both, as the Python package does."""

import os
import sys

CLI_NAMES = ("modeltrain", "modeltrain.exe")


def main() -> int:
    if os.path.basename(sys.argv[0]) in CLI_NAMES:  # case matters: the app itself is "ModelTrain"
        from server.cli import main as cli

        return cli(sys.argv[1:])
    from desktop.app import main as desktop

    return desktop()


if __name__ == "__main__":
    sys.exit(main())
