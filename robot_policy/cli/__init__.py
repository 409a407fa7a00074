"""The ``robot-policy`` command. One module per command group; see ``main.py``."""
