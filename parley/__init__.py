"""Parley: the command line (``parley serve``, ``parley fake-llm``) and the shipped fake LLM server."""

from runtime import __version__

__all__ = ["__version__"]
