"""The ggtool command line: thin Click commands over the library, one module per group of
commands (quantize.py: convert/quantize/imatrix; talk.py: chat/run/serve; measure.py:
bench/compare; store.py: pull/list/show/rm/cp/prune/quants; system.py: doctor/demo).

Data goes to stdout (tables, --json); progress, warnings and hints go to stderr.
Errors are formatted in one place: 'Error: ...' and 'Hint: ...', exit code 1.
"""

from __future__ import annotations

import os
import sys

import click

from .. import __version__
from ..errors import GgtoolError, format_error
from ..paths import ENV_VARS

ENV_HELP = "\b\nEnvironment variables:\n" + "\n".join(f"  {k:<20} {v}" for k, v in ENV_VARS.items())


def say(msg: str) -> None:
    """Talk to the user (stderr)."""
    click.echo(msg, err=True)


EXIT_ERROR = 1        # a GgtoolError: bad input, a full disk, ... (Error: + Hint:)
EXIT_BUG = 70         # an unexpected exception: a bug in ggtool (EX_SOFTWARE)
EXIT_INTERRUPTED = 130


class Failure(click.ClickException):
    """A GgtoolError on its way out of a command: shown as 'Error:' and 'Hint:' lines, exit 1.
    Raised inside the group, so `main` and click's CliRunner print the same thing."""

    exit_code = EXIT_ERROR

    def __init__(self, err: GgtoolError):
        super().__init__(err.message)
        self.err = err

    def show(self, file=None) -> None:
        show_error(self.err)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GgtoolError as e:
            if os.environ.get("GGTOOL_DEBUG"):
                raise
            raise Failure(e) from None


@click.group(cls=_Group, epilog=ENV_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ggtool")
def cli():
    """ggtool: get a model onto your machine as a GGUF at the size you can afford."""


def _color_stderr() -> bool:
    """Colour on a terminal, unless NO_COLOR is set (https://no-color.org)."""
    return not os.environ.get("NO_COLOR") and sys.stderr.isatty()


def show_error(err: GgtoolError) -> None:
    color = _color_stderr()
    click.echo(format_error(err, color=color), err=True, color=color)


def main(argv=None) -> None:
    """Entry point: run the CLI. GgtoolErrors become 'Error:/Hint:' lines and exit 1; Ctrl-C
    exits 130; anything else is a bug: one 'Error:' line that says so, exit 70
    (GGTOOL_DEBUG=1 shows the traceback instead)."""
    try:
        cli.main(args=argv, prog_name="ggtool", standalone_mode=False)
    except click.exceptions.Abort:  # click has already ended the line
        click.echo("Interrupted; nothing half-written was left behind.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("\nInterrupted; nothing half-written was left behind.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except BaseException as e:  # Exception, and a Rust panic from a binding (pyo3's PanicException)
        if isinstance(e, (SystemExit, GeneratorExit)) or os.environ.get("GGTOOL_DEBUG"):
            raise
        what = " ".join(str(e).split())  # one line, however the exception spells itself
        what = what if len(what) <= 300 else what[:297] + "..."
        bug = GgtoolError(f"internal error (a bug in ggtool {__version__}): {type(e).__name__}: {what}",
                          hint="rerun with GGTOOL_DEBUG=1 to see the traceback, and please report it")
        show_error(bug)
        sys.exit(EXIT_BUG)


# the commands register themselves on `cli`
from . import quantize, talk, measure, store, system  # noqa: E402,F401
