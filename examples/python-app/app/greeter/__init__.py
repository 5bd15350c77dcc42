"""The web app of kiln's python-app example."""

__version__ = "1.0.0"
