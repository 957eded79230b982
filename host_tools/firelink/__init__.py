"""FireLink host tools: one package, one CLI (`firelink`), each command a thin layer over these modules."""
__version__ = "0.1.0"
