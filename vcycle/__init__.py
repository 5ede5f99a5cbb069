"""vcycle: keeps cloud spaces filled with the machines that the demand needs."""

__version__ = "4.0.0.dev0"
