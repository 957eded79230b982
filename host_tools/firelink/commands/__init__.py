"""The `firelink` subcommands: each module's `register(subparsers)` adds a parser; the work is in the job packages."""
