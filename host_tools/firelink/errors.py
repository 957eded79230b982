"""The host tools' one error type: a message for the user and the exit code to leave with.

Each job's library raises its own subclass (a port, a board, the broker, the centre, a virtual
device, provisioning: `PortError`, `DeviceError`, `BrokerError`, `CentreError`, `VirtualError`,
`ProvisionError`, ...), worded for the person at the keyboard. `cli.main()` is the one place that
turns a FireLinkError into its message on stderr and its exit code; a command raises, it never
maps. Anything else that escapes a command is a bug and keeps its traceback.
"""
from __future__ import annotations

# Exit codes, kept stable for scripts. 130 is an interrupt (Ctrl-C), as shells give it.
FAILED = 1      # the work was tried and failed: the message says what and what to do
NOT_DONE = 2    # nothing was done: a command-line value or an input cannot work (argparse's usage
                # errors exit 2 too), or the serial port or the device's console cannot be used
NO_ANSWER = 3   # a remote command got no result in time: the device may still carry it out


class FireLinkError(Exception):
    """A failure with a message for the user (and what to do about it)."""

    exit_code: int = FAILED

    def __init__(self, message: str = "", *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self)


class UsageError(FireLinkError):
    """A command-line value, an option combination or an input file that cannot work: nothing was
    done. The message names the option or the file."""

    exit_code = NOT_DONE
