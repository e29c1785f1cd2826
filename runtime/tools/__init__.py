"""Tools: schemas derived from Python source, the built-in memory tools, and how calls are executed."""
