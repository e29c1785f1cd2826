"""Ray hosting for the runtime: conversation actors, the directory that finds them, provider actors."""
