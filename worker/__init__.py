"""worker: a folder-watching image classification worker."""

__version__ = "0.1.0"
