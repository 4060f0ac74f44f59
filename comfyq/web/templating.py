"""The Jinja2 templates of the run pages, shipped in the package, escaped by default.

Autoescaping is on for every template, so any text that came from a run (inputs, error
messages, tracebacks, file names, webhook errors) reaches the browser as text, never as markup.
An undefined name is an error rather than an empty string, so a typo fails loudly in tests.
"""

from __future__ import annotations

import functools
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined


@functools.cache
def environment() -> Environment:
    return Environment(loader=PackageLoader("comfyq.web", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(template: str, **context: Any) -> str:
    """``template`` (a file name under ``comfyq/web/templates``) rendered with ``context``."""
    return environment().get_template(template).render(**context)
