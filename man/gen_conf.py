"""Render arqond.conf(5): the page template with its key reference built from config.SCHEMA.

Usage: PYTHONPATH=. python3 man/gen_conf.py man/arqond.conf.5.in > man/arqond.conf.5
The template holds the prose; each section's key list replaces its "@KEYS section@" line, and
"@KEYS *@" stands for every section the template does not name (under OTHER SECTIONS), so a key
exists once (in arqond/config.py) and the page can never miss it.
"""

from __future__ import annotations

import re
import sys

from arqond import __version__
from arqond.config import SCHEMA, Option

KIND_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string",
              list: "array"}
RELOADED = "Reloaded on SIGHUP."
NOT_RELOADED = "Not reloaded on SIGHUP; restart arqond to apply a change."
KEYS_LINE = re.compile(r"^@KEYS (\w+|\*)@$")


def toml_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(item) for item in value) + "]"
    return repr(value)


def roff_text(text: str) -> str:
    """Escape for roff and put each sentence on its own line, as mdoc wants."""
    text = text.replace("\\", "\\e")
    lines = re.split(r"(?<=[.;:]) (?=[A-Z\"])", text)
    return "\n".join("\\&" + line if line[:1] in ".'" else line for line in lines)


def roff_word(text: str) -> str:
    return text.replace("\\", "\\e").replace('"', "\\(dq")


def render_option(option: Option) -> str:
    lines = [f".It Cm {option.key} Pq Vt {KIND_NAMES[option.kind]} ,"
             f" default Li {roff_word(toml_literal(option.default))}",
             roff_text(option.doc)]
    sources = [f"Flag\n.Fl {option.flag.removeprefix('-')}"] if option.flag else []
    sources.append("Environment\n.Ev " + " , ".join(option.env_names))
    lines.append(".Pp\n" + " .\n".join(sources) + " .")
    lines.append(".Pp\n" + (RELOADED if option.reload else NOT_RELOADED))
    return "\n".join(lines)


def render_section(section: str) -> str:
    options = [option for option in SCHEMA if option.section == section]
    if not options:
        raise SystemExit(f"gen_conf: the template names section [{section}], SCHEMA has none")
    return "\n".join([".Bl -tag -width Ds", *map(render_option, options), ".El"])


def render(template: str) -> str:
    lines = template.splitlines()
    named = {m.group(1) for m in map(KEYS_LINE.match, lines) if m and m.group(1) != "*"}
    others = [s for s in dict.fromkeys(option.section for option in SCHEMA) if s not in named]
    out = []
    for line in lines:
        match = KEYS_LINE.match(line)
        if match is None:
            out.append(line.replace("@VERSION@", __version__))
        elif match.group(1) == "*":
            if others:
                out.append(".Sh OTHER SECTIONS")
                out.extend(f".Ss Bq {section}\n{render_section(section)}" for section in others)
        else:
            out.append(render_section(match.group(1)))
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as handle:
        sys.stdout.write(render(handle.read()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
