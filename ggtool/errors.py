"""Every error ggtool raises on purpose, each with a hint. `cli.main` formats them in one place."""

from __future__ import annotations


class GgtoolError(Exception):
    """An error a user can act on: a one-line message and a hint."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InputError(GgtoolError):
    """The input (a checkpoint, a GGUF, a flag) is unusable."""


class UnsupportedArchitecture(InputError):
    pass


class CorruptFile(InputError):
    hint = "The file is damaged or incomplete: download it again."


class BadWeights(InputError):
    hint = "The checkpoint holds NaN or Inf weights; it cannot be converted as it is."


class QuantError(GgtoolError):
    pass


class OutputError(GgtoolError):
    """The output cannot be written (permissions, full disk). Nothing partial is left."""


class DependencyError(GgtoolError):
    pass


def format_error(err: GgtoolError, color: bool = False) -> str:
    """The two stderr lines `cli.main` prints: 'Error: ...' and, if any, 'Hint: ...'
    (the labels in red and yellow when `color`)."""
    red, yellow, off = ("\x1b[1;31m", "\x1b[33m", "\x1b[0m") if color else ("", "", "")
    lines = [f"{red}Error:{off} {err.message}"]
    if err.hint:
        lines.append(f"{yellow}Hint:{off} {err.hint}")
    return "\n".join(lines)
