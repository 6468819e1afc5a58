from pathlib import Path

import pytest

from seglab.config import config_from_dict, dump_config, load_config
from seglab.errors import ConfigError
from seglab.models import create_model

from conftest import ROOT

CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
FULL_RECIPES = sorted((ROOT / "configs" / "full").glob("*.yaml"))


def test_defaults_validate(tiny_raw):
    cfg = config_from_dict(tiny_raw)
    assert cfg.train.epochs == 2 and cfg.model.options() == {"base_channels": 4, "depth": 2}


def test_unknown_key_names_dotted_path_and_allowed(tiny_raw):
    tiny_raw["train"]["epocs"] = 3
    with pytest.raises(ConfigError, match=r"train\.epocs: unknown key; allowed: epochs"):
        config_from_dict(tiny_raw, "x.yaml")


def test_wrong_type(tiny_raw):
    tiny_raw["train"]["batch_size"] = "many"
    with pytest.raises(ConfigError, match=r"x.yaml: train\.batch_size: .*integer.*'many'"):
        config_from_dict(tiny_raw, "x.yaml")


def test_bad_value_lists_allowed(tiny_raw):
    tiny_raw["optimizer"]["name"] = "adagrad"
    with pytest.raises(ConfigError, match=r"optimizer\.name: bad value 'adagrad'.*'adam'"):
        config_from_dict(tiny_raw)


def test_out_of_range_value(tiny_raw):
    tiny_raw["train"]["epochs"] = 0
    with pytest.raises(ConfigError, match=r"train\.epochs: .*greater than or equal to 1"):
        config_from_dict(tiny_raw)


def test_set_overrides_parse_yaml_values(tiny_raw):
    cfg = config_from_dict(tiny_raw, overrides=["train.epochs=5", "optimizer.lr=3e-4", "augment.resize=[64, 80]",
                                                "model.dropout=0.2"])
    assert cfg.train.epochs == 5 and cfg.optimizer.lr == 3e-4
    assert cfg.augment.resize == (64, 80) and cfg.model.options()["dropout"] == 0.2


@pytest.mark.parametrize("bad", ["train.epochs", "=3", "train..epochs=3"])
def test_bad_override_syntax(tiny_raw, bad):
    with pytest.raises(ConfigError, match="--set"):
        config_from_dict(tiny_raw, overrides=[bad])


def test_override_unknown_key_fails(tiny_raw):
    with pytest.raises(ConfigError, match=r"train\.nope: unknown key"):
        config_from_dict(tiny_raw, overrides=["train.nope=1"])


def test_dump_roundtrip(tiny_raw, tmp_path):
    cfg = config_from_dict(tiny_raw)
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg
    assert "synthetic:" in p.read_text() and "sources:" not in p.read_text()


def test_dump_shows_only_what_applies(tmp_path):
    cfg = load_config(ROOT / "configs" / "camvid_unet.yaml")
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert "synthetic:" not in p.read_text() and "balance_sources" not in p.read_text()
    assert load_config(p) == cfg


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_folder_dataset_needs_train(tiny_raw):
    tiny_raw["data"] = {"kind": "folder"}
    with pytest.raises(ConfigError, match="data: .*needs data.train"):
        config_from_dict(tiny_raw)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_builds_its_model(path):
    """A config file, or a sweep file (`experiments:`) whose every experiment loads and builds."""
    import torch

    from seglab.workflows.experiments import expand_experiments

    for _, cfg in expand_experiments([path]):
        options = {k: v for k, v in cfg.model.options().items() if k != "pretrained"}  # no weights into meta tensors
        with torch.device("meta"):  # shapes only: fast even for the 134M-parameter FCNs
            model = create_model(cfg.model.name, in_channels=cfg.data.in_channels, num_classes=3, **options)
        assert sum(p.numel() for p in model.parameters()) > 0


def _without_length(path):
    d = load_config(path).to_dict()
    d["train"].pop("max_epochs")  # used with a budget only; checked below
    return d["train"].pop("time_budget"), d["output"].pop("name"), d


@pytest.mark.parametrize("path", FULL_RECIPES, ids=lambda p: p.name)
def test_full_recipe_is_its_one_hour_recipe_without_the_budget(path):
    # configs/NAME.yaml fits 1 h on 2 CPU cores; configs/full/NAME.yaml trains the fixed train.epochs:
    # the same recipe otherwise, so a result of one says something about the other.
    budget, name, one_hour = _without_length(ROOT / "configs" / path.name)
    full_budget, full_name, full = _without_length(path)
    assert budget == "1h" and full_budget is None and full_name == f"{name}_full"
    assert full == one_hour
    # the budgeted recipe stops at the full recipe's length, on a machine fast enough to get there (a GPU)
    assert load_config(ROOT / "configs" / path.name).train.max_epochs == full["train"]["epochs"]
    lines = path.read_text().splitlines()
    assert sum(line.startswith("# Measured on ") for line in lines) == 1


def test_epochs_override_of_a_budgeted_config_is_refused(tiny_raw):
    raw = {**tiny_raw, "train": {**tiny_raw["train"], "time_budget": "1h"}}
    with pytest.raises(ConfigError, match=r"x.yaml: --set train.epochs has no effect while train.time_budget is 1h; "
                                          r"add --set train.time_budget=null"):
        config_from_dict(raw, "x.yaml", overrides=["train.epochs=5"])
    assert config_from_dict(raw, overrides=["train.epochs=5", "train.time_budget=null"]).train.epochs == 5


def test_overrides_leave_the_callers_dict_alone(tiny_raw):
    import copy

    before = copy.deepcopy(tiny_raw)
    cfg = config_from_dict(tiny_raw, overrides=["train.epochs=3", "model.base_channels=4"])
    assert cfg.train.epochs == 3 and tiny_raw == before


@pytest.mark.parametrize("text, key, lines", [
    ("data: {kind: synthetic}\ntrain:\n  epochs: 3\nmodel: {name: unet}\ntrain:\n  epochs: 5\n", "train", (2, 5)),
    ("data: {kind: synthetic}\noptimizer:\n  lr: 0.1\n  name: adam\n  lr: 0.01\n", "lr", (3, 5)),
])
def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path, text, key, lines):
    """YAML keeps the last of two equal keys silently (issue 24 item 7)."""
    p = tmp_path / "dup.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == (f"{p}: key {key!r} is given twice (lines {lines[0]} and {lines[1]}); keep one of them")



def test_a_set_mapping_never_drops_a_sections_other_settings(tiny_raw, capsys):
    """Issue 24 item 7: `--set model={name: unet, depth: 2}` would reset the config's other model options
    (base_channels 4 -> 32, 29,643 -> 467,235 parameters): refused with the dotted keys that do it; a mapping
    that keeps every key, a section the config lacks and a nested mapping (data.train={...}) are applied."""
    from conftest import cfg_file, cli_fails

    with pytest.raises(ConfigError, match=r"^--set model=\{name: unet, depth: 2\}: a mapping would replace the whole "
                       r"model section, dropping its base_channels; set options one by one: "
                       r"--set model.name=unet --set model.depth=2$"):
        config_from_dict(tiny_raw, overrides=["model={name: unet, depth: 2}"])
    cfg = config_from_dict(tiny_raw, overrides=["model={name: unet, depth: 3, base_channels: 8}"])
    assert (cfg.to_dict()["model"]["depth"], cfg.to_dict()["model"]["base_channels"]) == (3, 8)
    # a mapping that names another model replaces the section: the unet's options do not apply to an fcn
    assert config_from_dict(tiny_raw, overrides=["model={name: fcn}"]).to_dict()["model"]["name"] == "fcn"
    raw = {k: v for k, v in tiny_raw.items() if k != "schedule"}
    assert config_from_dict(raw, overrides=["schedule={name: cosine, warmup_epochs: 1}"]).schedule.warmup_epochs == 1
    folder = config_from_dict({**tiny_raw, "data": {"kind": "folder", "root": ".", "train": {"images": "i", "masks": "m"}}},
                              overrides=["data.train={list: train.txt}"])
    assert folder.data.train.list == "train.txt"
    cli_fails(capsys, ["inspect", cfg_file(Path(tiny_raw["output"]["dir"]).parent, tiny_raw), "--set",
                       "train={epochs: 3}"], r"--set train=\{epochs: 3\}: a mapping would replace the whole train "
                       r"section, dropping its amp, batch_size, channels_last, num_workers; set options one by one: "
                       r"--set train.epochs=3")


def test_train_reads_its_config_once(tmp_path, tiny_raw, monkeypatch):
    """Issue 43 item 5: the CLI checks the config before importing torch and hands the parsed Config to the
    training; it was parsed again there (and on --resume a third and fourth time)."""
    import yaml

    import seglab.config.loading as loading
    from seglab.cli import main

    tiny_raw["train"]["epochs"] = 1
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_raw))
    real, calls = loading.config_from_dict, []
    monkeypatch.setattr(loading, "config_from_dict", lambda *a, **k: calls.append(a[1] if len(a) > 1 else "") or real(*a, **k))
    assert main(["train", str(path)]) == 0
    assert calls == [str(path)]
