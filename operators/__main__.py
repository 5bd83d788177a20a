"""``python -m operators`` is the ``rectune`` command (for environments without the script)."""

from operators.cli import main

if __name__ == "__main__":
    main()
