"""Several user-data parts as one MIME multipart document, as cloud-init reads it.

Each part's type comes from its first line, as cloud-init decides it:
``#cloud-config``, ``#!`` (a script), ``#cloud-boothook``, ``#include``,
``#part-handler``, ``## template: jinja``; a part that already is MIME is
kept as it is. One part alone is returned unwrapped.
"""

from __future__ import annotations

from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

STARTS = (
    ("#cloud-config-archive", "cloud-config-archive"),
    ("#cloud-config", "cloud-config"),
    ("#cloud-boothook", "cloud-boothook"),
    ("#include-once", "x-include-once-url"),
    ("#include", "x-include-url"),
    ("#part-handler", "part-handler"),
    ("## template: jinja", "jinja2"),
    ("#!", "x-shellscript"),
)


def part_type(text: str) -> str:
    """The text/* subtype cloud-init gives a part starting like ``text``."""
    for start, subtype in STARTS:
        if text.startswith(start):
            return subtype
    return "plain"


def combine(parts: list[str]) -> bytes:
    """One part as is; several as multipart/mixed with a typed attachment each."""
    if len(parts) == 1:
        return parts[0].encode("utf-8")
    document = MIMEMultipart("mixed")
    for index, text in enumerate(parts, start=1):
        part = MIMEText(text, part_type(text), "utf-8")
        part.add_header("Content-Disposition", "attachment", filename=f"part-{index:03d}")
        document.attach(part)
    return document.as_bytes()
