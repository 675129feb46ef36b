"""qstar_lib: the executable companion to *From r to Q*: Your Language Model is Secretly a Q-Function*.

Small modules with one responsibility each (see CONTRIBUTING.md for the map). Importing the package
does no work: models, data and sympy are loaded only by the modules that need them.
"""

__version__ = "0.1.0"
