"""The subcommands: each composes sources, checks and sinks."""
