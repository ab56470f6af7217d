"""The pack's command-line style, shared by its commands (`edit`, `specialize`): a refusal is one
sentence `COMMAND: ...` on stderr naming the flag or path and what to do, with exit status 2 (a malformed
command line too, without argparse's usage block); a failure while working exits with 1 (its traceback
with --verbose), an interruption with 130."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

EXIT_REFUSED, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


class CommandError(Exception):
    """What ends a command early: `lines` to print (each after `COMMAND: `) and the exit `status`."""

    status = EXIT_FAILED

    def lines(self, verbose: bool) -> list[str]:
        return [str(self)]


class InputRefusedError(CommandError):
    """An input the command cannot use; the message says which and what to do, in the command's terms."""

    status = EXIT_REFUSED


class CommandParser(argparse.ArgumentParser):
    """argparse that refuses a malformed command line in one sentence (no usage block) with status 2."""

    def error(self, message: str):
        raise InputRefusedError(f"{message} (see {self.prog} --help)")


def run_command(
    prog: str, body: Callable[[], object], verbose: bool, interrupted: str = "no output was written"
) -> int:
    """Run `body` (which parses the command line and does the work) in the pack's style; returns the exit
    status. `interrupted`: what the command says of its outputs after Ctrl-C."""
    try:
        body()
    except CommandError as error:
        for line in error.lines(verbose):
            print(f"{prog}: {line}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a failure the command did not foresee (e.g. writing the output)
        if verbose:
            raise
        print(
            f"{prog}: failed: {type(error).__name__}: {error} (run with --verbose for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return 0
