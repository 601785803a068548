"""``python -m cg_train`` and ``accelerate launch -m cg_train``."""
from .cli import console_main

if __name__ == "__main__":
    console_main()
