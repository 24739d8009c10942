"""VA Fleet engines: the data mover that runs on the appliances.

A standalone package: it must never import Django or the server's apps (a test enforces it),
because appliances receive only this package and its pinned dependencies.
"""

__version__ = "0.1.0"
