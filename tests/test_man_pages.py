"""The man pages lint clean, render, and keep up with the code: every flag of arqond, every
config key (type, default, SIGHUP behaviour), every config table and every arqon subcommand
and flag, read from argparse and SCHEMA at run time, is documented in its page."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

from arqond import app, cli, config
from arqond.core.errors import ErrorCode, RpcCode

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man"
STATIC_PAGES = ("arqond.8", "arqon.1", "arqond-moo.7")


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_conf", MAN / "gen_conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_conf = load_generator()


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """Every page as installed: the static ones, and arqond.conf.5 rendered from SCHEMA."""
    out = tmp_path_factory.mktemp("man") / "arqond.conf.5"
    out.write_text(gen_conf.render((MAN / "arqond.conf.5.in").read_text()))
    return {name: MAN / name for name in STATIC_PAGES} | {"arqond.conf.5": out}


def rendered(page: Path) -> str:
    text = subprocess.run(["mandoc", "-Tascii", str(page)], capture_output=True, text=True,
                          check=True).stdout
    return re.sub(r".\x08", "", text)  # drop bold/underline overstriking


def section(text: str, name: str) -> str:
    match = re.search(rf"^{name}\n(.*?)(?=^[A-Z][A-Z ]+\n|\Z)", text, re.S | re.M)
    assert match, f"the page has no {name} section"
    return match.group(1)


def mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


class ParserCaught(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def parser_of(main, monkeypatch) -> argparse.ArgumentParser | None:
    """The ArgumentParser that ``main`` builds, caught as it starts parsing."""
    def catch(self, *args, **kwargs):
        raise ParserCaught(self)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
    try:
        main(["--help"])
    except ParserCaught as caught:
        return caught.parser
    finally:
        monkeypatch.undo()
    return None


def flags(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings
            if flag.startswith("--")]


def subcommands(parser: argparse.ArgumentParser, prefix: str = ""):
    """(path, parser) for every subcommand, nested ones as "zgent register"."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}".strip()
                yield path, sub
                yield from subcommands(sub, path)


@pytest.mark.parametrize("name", [*STATIC_PAGES, "arqond.conf.5"])
def test_page_lints_clean_and_renders(pages, name):
    lint = subprocess.run(["mandoc", "-Tlint", "-Wwarning", str(pages[name])],
                          capture_output=True, text=True)
    assert lint.returncode == 0, f"mandoc -Tlint -Wwarning {name}:\n{lint.stdout}{lint.stderr}"
    man = subprocess.run(["man", "-l", str(pages[name])], capture_output=True, text=True,
                         env={"MANPAGER": "cat", "PATH": "/usr/bin:/bin", "MANWIDTH": "80"})
    assert man.returncode == 0 and man.stderr == "", man.stderr
    title = name.rsplit(".", 1)[0].upper()
    assert man.stdout.startswith(title) and "\nNAME\n" in man.stdout, man.stdout[:300]


def test_every_arqond_flag_is_in_arqond_8(pages, monkeypatch):
    parser = parser_of(app.main, monkeypatch)
    assert parser is not None, "arqond.app.main no longer parses its arguments with argparse"
    options = section(rendered(pages["arqond.8"]), "OPTIONS")
    synopsis = section(rendered(pages["arqond.8"]), "SYNOPSIS")
    missing = [flag for flag in flags(parser) if not mentions(options, flag)]
    assert not missing, f"add to man/arqond.8 OPTIONS (and SYNOPSIS): {missing}"
    unlisted = [flag for flag in flags(parser) if flag != "--help"
                and not mentions(synopsis, flag)]
    assert not unlisted, f"add to man/arqond.8 SYNOPSIS: {unlisted}"


def key_entries(text: str) -> dict[str, str]:
    """Key heading line -> its paragraph, from the rendered arqond.conf(5)."""
    entries: dict[str, str] = {}
    pattern = re.compile(r"^( +)([a-z_]+\.[a-z_]+) \((\w+), default (.*)\)$", re.M)
    heads = list(pattern.finditer(text))
    for head, following in zip(heads, heads[1:] + [None]):
        end = following.start() if following else len(text)
        entries[head.group(2)] = text[head.start():end]
    return entries


def test_every_config_key_is_in_arqond_conf_5_with_type_default_and_reload(pages):
    entries = key_entries(rendered(pages["arqond.conf.5"]))
    for option in config.SCHEMA:
        entry = entries.get(option.key)
        assert entry, f"{option.key} is missing from arqond.conf(5)"
        kind = gen_conf.KIND_NAMES[option.kind]
        literal = gen_conf.toml_literal(option.default)
        assert entry.splitlines()[0].strip() == f"{option.key} ({kind}, default {literal})"
        words = " ".join(entry.split())
        assert (gen_conf.RELOADED if option.reload else gen_conf.NOT_RELOADED) in words
        other = gen_conf.NOT_RELOADED if option.reload else gen_conf.RELOADED
        assert other not in words, f"{option.key}: both reload sentences"
        for name in option.env_names + ((option.flag,) if option.flag else ()):
            assert mentions(words, name), f"{option.key}: {name} not named"
    assert sorted(entries) == sorted(config.OPTIONS), "the page lists keys SCHEMA lacks"


def test_every_config_table_is_in_arqond_conf_5(pages):
    text = rendered(pages["arqond.conf.5"])
    missing = [name for name in config.TABLE_VALIDATORS if f"[{name}." not in text
               and f"[{name}]" not in text]
    assert not missing, f"describe these tables in man/arqond.conf.5.in: {missing}"


def test_generator_refuses_a_template_section_that_schema_lacks():
    with pytest.raises(SystemExit, match=r"\[nosuch\]"):
        gen_conf.render(".Sh X\n@KEYS nosuch@\n")


def test_generator_puts_sections_the_template_does_not_name_under_other_sections(monkeypatch):
    template = "@KEYS server@\n@KEYS *@\n"
    assert ".Sh OTHER SECTIONS" not in gen_conf.render(
        "".join(f"@KEYS {section}@\n" for section in config.SECTIONS) + "@KEYS *@\n")
    extra = config.Option("extra.knob", int, 3, "A knob.", reload=True)
    monkeypatch.setattr(gen_conf, "SCHEMA", config.SCHEMA + (extra,))
    page = gen_conf.render(template)
    assert page.count(".Sh OTHER SECTIONS") == 1
    assert ".Ss Bq extra\n.Bl -tag -width Ds\n.It Cm extra.knob Pq Vt integer" in page
    assert ".Ss Bq auth\n" in page and ".Ss Bq server" not in page
    assert page.count(".It Cm server.port ") == 1


def test_every_arqon_subcommand_and_flag_is_in_arqon_1(pages, monkeypatch):
    parser = parser_of(cli.main, monkeypatch)
    if parser is None:
        pytest.skip("arqon has no argument parser yet (placeholder CLI)")
    text = rendered(pages["arqon.1"])
    commands, options = section(text, "COMMANDS"), section(text, "OPTIONS")
    found = list(subcommands(parser))
    missing = [path for path, _ in found
               if not re.search(rf"^ +{re.escape(path)}(?![\w-])", commands, re.M)]
    assert not missing, f"add to man/arqon.1 COMMANDS: {missing}"
    missing = sorted({flag for parser_ in [parser] + [sub for _, sub in found]
                      for flag in flags(parser_) if not mentions(options, flag)} - {"--help"})
    assert not missing, f"add to man/arqon.1 OPTIONS: {missing}"


def test_every_wire_error_code_is_listed_where_users_look_them_up():
    """arqond(8) lists the error_code values of the bus, arqond-moo(7) the JSON-RPC codes of
    Zgent sockets; both lists follow arqond/core/errors.py."""
    bus_page = (MAN / "arqond.8").read_text()
    moo_page = (MAN / "arqond-moo.7").read_text()
    for code in ErrorCode:
        assert re.search(rf"^\.It Li .*\b{code.value}\b", bus_page, re.M), code
    for code in RpcCode:
        assert re.search(rf"^\.It Li \\-{-code.value}$", moo_page, re.M), code
