"""The Rich consoles of the ``kerma`` command: :func:`make_console`.

Rich sizes its output to the terminal, and to 80 columns when there is none, so a
table piped to ``cat``, ``less`` or a CI log folds into narrow columns. Consoles made
here honour ``COLUMNS`` when it is set and otherwise use :data:`NON_TERMINAL_WIDTH`
when their stream is not a terminal; on a terminal Rich measures it as usual.

May import nothing of Kerma.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from rich.console import Console

#: Width, in columns, of output written to a pipe or a file when ``COLUMNS`` is not set.
NON_TERMINAL_WIDTH = 160


def console_width(stream: TextIO | None) -> int | None:
    """Return the width a console writing to ``stream`` should use (``None``: ask Rich).

    Parameters
    ----------
    stream : file-like or None
        ``sys.stdout`` or ``sys.stderr``.

    Returns
    -------
    int or None
        ``COLUMNS`` when it is a number; ``None`` when ``stream`` is a terminal (Rich
        measures it); :data:`NON_TERMINAL_WIDTH` otherwise.
    """
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        is_terminal = stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        is_terminal = False
    return None if is_terminal else NON_TERMINAL_WIDTH


def make_console(*, stderr: bool = False) -> Console:
    """Return a Rich console on stdout (or stderr) with a readable width off a terminal.

    Parameters
    ----------
    stderr : bool, optional
        Write to standard error instead of standard output. Default ``False``.

    Returns
    -------
    rich.console.Console
        Its width is :func:`console_width` of the stream.
    """
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=console_width(stream))
