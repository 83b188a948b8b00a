"""How the CLI talks to people and to logs: quiet logging set-up and tables that fit.

Logging: libraries log their own set-up at INFO (alembic announces its migration context on
every start). Nobody reading a terminal or a log wants that, so the root logger is set to
WARNING and only vidgate's own loggers speak at INFO. JSON lines are for log shippers and are
asked for explicitly (``--log-json`` or ``VIDGATE_LOG_FORMAT=json``), never the default.

Tables: rich shrinks every column of a table wider than the console until each header is a
single ``…`` — unreadable at 80 columns, and the same when the output is piped into a log
(rich then assumes 80 columns, or ``COLUMNS``). A table that does not fit is printed as
several narrower tables instead, each repeating the first (key) column, so every header and
every value is shown whole.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

#: the environment variable that asks for JSON log lines (``json``) instead of plain text
LOG_FORMAT_ENV = "VIDGATE_LOG_FORMAT"
#: libraries that log routine set-up at INFO; kept at WARNING even with --verbose
_CHATTY = ("alembic", "uvicorn.access", "httpx", "httpcore", "limits", "asyncio")


def json_logs_requested(flag: bool | None = None) -> bool:
    """The flag wins; without it, ``VIDGATE_LOG_FORMAT=json`` asks for JSON."""
    if flag is not None:
        return flag
    return os.environ.get(LOG_FORMAT_ENV, "").strip().lower() == "json"


def configure_logging(*, json_logs: bool | None = None, verbose: bool = False) -> None:
    """One handler on stderr; vidgate's loggers at INFO (DEBUG with ``verbose``), the rest of
    the world at WARNING. Idempotent: a second call replaces the first's handler."""
    handler = logging.StreamHandler(sys.stderr)
    if json_logs_requested(json_logs):
        # The service's formatter: one schema for every vidgate process's JSON lines.
        from vidgate.server.observability import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("vidgate").setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)


# -- tables ------------------------------------------------------------------------------------

#: per column: one space of padding each side plus the separator rich draws between columns
_COLUMN_OVERHEAD = 3


def _cell_width(console: Console, cell: Any) -> int:
    if isinstance(cell, str):
        return max((Text.from_markup(line).cell_len for line in cell.splitlines()), default=0)
    return console.measure(cell).maximum


def _column_widths(console: Console, table: Table) -> list[int]:
    widths = []
    for col in table.columns:
        cells = [col.header, *col.cells]
        widths.append(max(_cell_width(console, c) for c in cells))
    return widths


def split_table(table: Table, width: int, console: Console | None = None) -> list[Table]:
    """``table`` as one or more tables no wider than ``width``: columns are packed left to
    right into groups, each group led by the first column so its rows can still be read."""
    console = console or Console(width=max(width, 20))
    widths = _column_widths(console, table)
    if not widths or sum(w + _COLUMN_OVERHEAD for w in widths) <= width:
        return [table]
    groups: list[list[int]] = []
    current: list[int] = [0]
    used = widths[0] + _COLUMN_OVERHEAD
    for i in range(1, len(widths)):
        cost = widths[i] + _COLUMN_OVERHEAD
        if len(current) > 1 and used + cost > width:
            groups.append(current)
            current, used = [0], widths[0] + _COLUMN_OVERHEAD
        current.append(i)
        used += cost
    groups.append(current)
    cells = [list(col.cells) for col in table.columns]
    out = []
    for n, group in enumerate(groups):
        # the title once: the parts that follow read as its continuation
        title = table.title if n == 0 else None
        part = Table(
            title=title,
            show_edge=table.show_edge,
            header_style=table.header_style,
            box=table.box,
        )
        for i in group:
            src = table.columns[i]
            part.add_column(src.header, justify=src.justify, no_wrap=src.no_wrap)
        for r, row in enumerate(table.rows):
            part.add_row(
                *[cells[i][r] for i in group],
                end_section=row.end_section,
                style=row.style,
            )
        out.append(part)
    return out


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` whole at the console's width (see the module docstring)."""
    for n, part in enumerate(split_table(table, console.width, console)):
        if n:
            console.print()
        console.print(part)
