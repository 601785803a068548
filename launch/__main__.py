"""``python -m launch``: the same as ``cg-launch``."""
from .cli import console_main

if __name__ == "__main__":
    console_main()
