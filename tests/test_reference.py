"""The generated references (docs/config-reference.md, docs/cli-reference.md) match the code, every config key
has a text, and the README's annotated config is the shipped recipe (issue 43 item 6)."""
import re

import yaml

from seglab.config.schema import Config
from seglab.reference import CLI_FILE, CONFIG_FILE, _described, _models_in, _sections, cli_reference, config_reference

from conftest import ROOT

STALE = "is stale: run `make reference` (python -m seglab.reference docs) and commit it"


def test_the_config_reference_is_current():
    assert (ROOT / "docs" / CONFIG_FILE).read_text() == config_reference(), f"docs/{CONFIG_FILE} {STALE}"


def test_the_cli_reference_is_current():
    assert (ROOT / "docs" / CLI_FILE).read_text() == cli_reference(), f"docs/{CLI_FILE} {STALE}"


def test_every_config_key_is_described_and_listed():
    text = config_reference()
    for key, cls in _sections(Config, ""):
        described = _described(cls)
        for name, field in cls.model_fields.items():
            assert f"| `{name}` |" in text
            assert described.get(name) or _models_in(field.annotation), f"{key or 'top level'}.{name}: no comment in the schema"


def test_the_cli_reference_names_every_command_and_option():
    from seglab.cli import build_parser

    text = cli_reference()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        assert f"## seglab {name}\n" in text
        for action in p._actions:
            for flag in action.option_strings:
                assert flag in text, f"seglab {name} {flag}"


def test_the_readme_config_is_the_shipped_recipe():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## One config, annotated\n.*?```yaml\n(.*?)```", readme, re.S)
    assert block, "README: no annotated config"
    shipped = ROOT / "configs" / "weizmann_horse_unet_lite0_pretrained.yaml"
    assert yaml.safe_load(block.group(1)) == yaml.safe_load(shipped.read_text())


def test_the_readme_is_a_front_door_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in docs:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: link to {target} resolves to nothing"
