"""The one way aieflow renders text: jinja2 templates stored beside the code that fills them."""

from __future__ import annotations

import jinja2


def environment(folder: str, autoescape=False) -> jinja2.Environment:
    """Templates under aieflow/<folder>; a missing value is an error, and C++ and HTML keep their layout.

    `autoescape` as jinja2 takes it: False for C++ and Markdown, a select_autoescape for HTML and SVG.
    """
    return jinja2.Environment(
        loader=jinja2.PackageLoader("aieflow", folder),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=autoescape,
    )
