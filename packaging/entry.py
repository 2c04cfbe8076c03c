"""Entry script of the frozen build: PyInstaller starts from a script, not from an entry point."""

import sys

from brainseg_app.main import main

if __name__ == "__main__":
    sys.exit(main())
