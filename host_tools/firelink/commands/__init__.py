"""The `firelink` subcommands, one module each: `register(subparsers)` adds its parser; the work
is done in the job packages, and errors are turned into messages only in firelink.cli."""
