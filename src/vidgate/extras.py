"""Which optional extra brings which importable module, so a missing one is named, not traced.

vidgate installs with no extras and still routes, plans and generates against the sandbox;
the HTTP service, PostgreSQL, Redis, charts and local models each need an extra. A command
that reaches for a module its install lacks exits 2 with the one line that fixes it.
"""

from __future__ import annotations

#: top-level module name -> the extra that installs it
EXTRA_OF: dict[str, str] = {
    "prometheus_client": "server",
    "redis": "server",
    "psycopg": "server",
    "matplotlib": "plan",
    "torch": "local",
    "diffusers": "local",
    "transformers": "local",
    "accelerate": "local",
    "mcp": "mcp",
    "mcp_types": "mcp",
    "ray": "ray",
}


def missing_extra(exc: ModuleNotFoundError, what: str = "this") -> str | None:
    """The one-line fix for a module that an optional extra provides, else None (a bug)."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return f"{what} needs {top}, which is not installed: pip install 'vidgate[{extra}]'"


def require(extra: str) -> None:
    """Fail now, in this process, if ``extra`` is not installed.

    A command that starts child processes (``vidgate serve``) must check before it spawns:
    a child that dies on import would only be restarted, over and over."""
    import importlib.util

    for module, needed_by in EXTRA_OF.items():
        if needed_by == extra and module != "psycopg" and importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
