from pathlib import Path

import pytest

from medtl.config import Config, list_recipes, load_config, recipe_path
from medtl.errors import ConfigError


def test_defaults_and_overrides_are_typed():
    cfg = load_config(None, ["train.epochs=3", "train.lr=1e-4", "preprocess.size=[32, 32]", "model.weights=null"])
    assert cfg.train.epochs == 3 and cfg.train.lr == pytest.approx(1e-4)
    assert cfg.preprocess.size == [32, 32] and cfg.model.weights is None


def test_recipes_ship_inside_the_package():
    names = list_recipes()
    assert {"demo", "sample_tiny", "pneumoniamnist_effnet_lite0"} <= set(names)
    import medtl

    pkg = Path(medtl.__file__).parent
    assert recipe_path("demo").resolve() == (pkg / "configs" / "demo.yaml").resolve()
    # each listed with the first sentence of its opening comment, whole even where it runs over lines
    assert names["sample_tiny"] == ("A tiny model on the built-in sample cohort (2D CT slices, site A): trains in "
                                    "well under a minute on a CPU.")
    assert all(about.endswith(".") for about in names.values()), names


@pytest.mark.parametrize("name", sorted(list_recipes()))
def test_every_shipped_recipe_validates_by_name(name):
    assert isinstance(load_config(name), Config)


def test_recipe_by_name_path_and_old_configs_path_agree(tmp_path):
    assert load_config("sample_tiny") == load_config("configs/sample_tiny.yaml") == load_config(recipe_path("sample_tiny"))
    with pytest.raises(ConfigError, match="did you mean 'sample_tiny'"):
        load_config("sample_tiyn")


def test_override_typos_suggest_the_real_key_and_name_the_override():
    with pytest.raises(ConfigError, match=r"override 'train.lrr=3': train has no key 'lrr'; did you mean 'train.lr'"):
        load_config("sample_tiny", ["train.lrr=3"])
    with pytest.raises(ConfigError, match="did you mean 'preprocess'"):
        load_config(None, ["preprocesss.size=[32,32]"])
    # free-form mappings take any key
    assert load_config(None, ["data.filter.site=B"]).data.filter == {"site": "B"}


def test_yaml_typo_names_the_file_and_suggests(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: line 2: train.epocs: .*did you mean 'epochs'"):
        load_config(bad)


def test_typos_and_bad_values_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="train.epoch"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="train.strategy"):
        load_config(None, ["train.strategy=everything"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml") as err:
        load_config(bad)
    assert "\n" not in str(err.value)


def test_save_and_reload_roundtrip(tmp_path):
    cfg = load_config(None, ["name=x", "augment.domain_shift=strong"])
    cfg.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("given, expected", [("off", "off"), ("on", "auto"), ("bf16", "bf16"), ("'off'", "off")])
def test_amp_off_reads_as_off_from_the_cli_and_yaml(tmp_path, given, expected):
    # YAML 1.1 reads a bare off/on as a boolean: `train.amp=off` used to be refused as "not 'auto', 'off'..."
    assert load_config("sample_tiny", [f"train.amp={given}"]).train.amp == expected
    (tmp_path / "c.yaml").write_text(f"train:\n  amp: {given}\n")
    assert load_config(tmp_path / "c.yaml").train.amp == expected


def test_override_values_are_text_unless_they_are_true_false_or_numbers():
    """YAML 1.1 read a site called NO as False and classes [no, yes] as booleans; manifest cells are text."""
    cfg = load_config("sample_tiny", ["data.filter.site=NO", "data.class_names=[no,yes]", "augment.flip=false",
                                      "train.epochs=5", "train.amp=off"])
    assert cfg.data.filter["site"] == "NO" and cfg.data.class_names == ["no", "yes"]
    assert cfg.augment.flip is False and cfg.train.epochs == 5 and cfg.train.amp == "off"
    cfg = load_config("sample_tiny", ["data.filter.site=1", "data.class_names=[0,1]"])
    assert cfg.data.filter["site"] == "1" and cfg.data.class_names == ["0", "1"]


def test_the_3d_demo_recipe_declares_its_modality():
    """Its cohort is NIfTI (no modality in the header): without ``data.modality`` the card recorded no
    training modality, and an MR series given to the CT model was scored without a word."""
    from medtl.guard import record_domain

    cfg = load_config("demo_ct3d")
    assert cfg.data.modality == "CT"
    assert record_domain([], 3, 1, declared_modality=cfg.data.modality)["families"] == ["CT"]


@pytest.mark.parametrize("text, message", [
    # PyYAML keeps the last of two equal keys: the second section dropped the first's lr without a word
    ("train:\n  lr: 0.1\ntrain:\n  epochs: 3\n", r"dup.yaml: not valid YAML \(line 3: key 'train' given twice \(first on line 1"),
    ("train:\n  lr: 0.1\n  lr: 0.2\n", r"dup.yaml: not valid YAML \(line 3: key 'lr' given twice \(first on line 2"),
    ("train:\n\tlr: 0.1\n", r"dup.yaml: not valid YAML \(line 2: found character .* indent with spaces, not tabs\)"),
])
def test_yaml_duplicate_keys_and_tabs_are_refused_with_their_line(tmp_path, text, message):
    (tmp_path / "dup.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(tmp_path / "dup.yaml")
    assert "\n" not in str(err.value)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    text = "train:\n  <<: {epochs: 3, lr: 0.1}\n  lr: 0.2\n"
    (tmp_path / "m.yaml").write_text(text)
    cfg = load_config(tmp_path / "m.yaml")
    assert cfg.train.epochs == 3 and cfg.train.lr == pytest.approx(0.2)


@pytest.mark.parametrize("text, message", [
    ("name: x\ntrian:\n  lr: 0.1\n", r"c.yaml: line 2: trian: .*did you mean 'train'"),
    ("name: x\ntrain: 5\n", r"c.yaml: line 2: train: Input should be a valid dictionary"),
    ("train:\n  epochs: 3\n  lr: abc\n", r"c.yaml: line 3: train.lr: "),
])
def test_yaml_schema_errors_name_the_line(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "c.yaml")


def test_unreadable_and_non_utf8_configs_are_config_errors(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes(b"train:\n  lr: 0.1  # caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(save the config as UTF-8\)"):
        load_config(tmp_path / "latin1.yaml")


def test_a_huge_or_deeply_nested_config_is_one_line_in_bounded_time(tmp_path):
    """200 MB of YAML took minutes (and a GB) to parse; 1,000 levels of ``[`` ended in a RecursionError
    reported as an internal error, in a file as in an override."""
    (tmp_path / "big.yaml").write_text("train:\n  epochs: 3\n" + "#" * (1 << 18) + "\n")
    with pytest.raises(ConfigError, match=r"big.yaml: over 262,144 bytes, too large for a config"):
        load_config(tmp_path / "big.yaml")
    (tmp_path / "deep.yaml").write_text("model:\n  kwargs:\n    x: " + "[" * 1000 + "]" * 1000 + "\n")
    with pytest.raises(ConfigError, match=r"deep.yaml: not valid YAML \(line 3: nested over 100 levels deep"):
        load_config(tmp_path / "deep.yaml")
    with pytest.raises(ConfigError, match=r"^override model.kwargs=\.\.\.: nested over 100 levels deep \(flatten it\)$"):
        load_config(None, ["model.kwargs={a: " + "[" * 1000 + "]" * 1000 + "}"])
    (tmp_path / "ok.yaml").write_text("model:\n  kwargs:\n    x: " + "[" * 90 + "]" * 90 + "\n")
    assert str(load_config(tmp_path / "ok.yaml").model.kwargs["x"]) == "[" * 90 + "]" * 90


def test_one_override_given_as_text_says_to_make_it_a_list():
    """It was iterated letter by letter: "override 't' must look like section.key=value"."""
    with pytest.raises(ConfigError, match=r"overrides are a list of key=value items, got the text 'train.epochs=5' "
                                          r"\(write \['train.epochs=5'\]\)"):
        load_config("sample_tiny", "train.epochs=5")


def test_a_hash_in_an_override_value_is_part_of_it():
    """YAML read ``name=exp #3`` as ``exp`` and a data path with `` #`` as the folder before it."""
    cfg = load_config(None, ["name=exp #3", "data.path=/data/site B #2/m.csv", "data.filter.site='B #2'",
                             "train.epochs=5"])
    assert cfg.name == "exp #3" and cfg.data.path == "/data/site B #2/m.csv"
    assert cfg.data.filter == {"site": "B #2"} and cfg.train.epochs == 5


def test_every_config_class_says_what_it_is():
    """``help(TrainConfig)`` showed pydantic's generic text: three sections had no docstring."""
    import medtl.config

    missing = [n for n in medtl.config.__all__ if isinstance(getattr(medtl.config, n), type)
               and not getattr(medtl.config, n).__dict__.get("__doc__")]
    assert missing == []


def test_a_value_no_type_of_a_field_takes_is_one_problem_named_by_its_key(tmp_path):
    """pydantic reports each branch of a union: the message named a key ``eval.threshold.float``, left out
    the words the field takes and counted 2 problems."""
    with pytest.raises(ConfigError) as err:
        load_config(None, ["eval.threshold=abc"])
    assert str(err.value) == ("eval.threshold: Input should be a valid number, unable to parse string as a number; "
                              "or Input should be 'youden' or 'val_youden' (1 problem(s); fix the override)")
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 3\n  lr: -1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: line 3: train.lr: Input should be greater than 0; or Input "
                                          r"should be 'auto' \(1 problem\(s\)"):
        load_config(tmp_path / "c.yaml")


def test_yaml_aliases_of_aliases_are_refused_in_bounded_time(tmp_path):
    """Eight lines loaded at once and then, when training saved its config, expanded into 10^8 values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    (tmp_path / "laughs.yaml").write_text("model:\n  kwargs:\n    " + "\n    ".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"laughs.yaml: over 100,000 values once YAML aliases \(\*name\) are "
                                          r"expanded"):
        load_config(tmp_path / "laughs.yaml")
    (tmp_path / "ok.yaml").write_text("preprocess:\n  size: &s [32, 32]\nmodel:\n  kwargs: {size: *s}\n")
    assert load_config(tmp_path / "ok.yaml").model.kwargs == {"size": [32, 32]}


def test_a_mapping_override_merges_into_its_section_like_hydra():
    """``train={epochs: 3}`` reset every other train key of the recipe to its default (min_steps 600 -> 0)."""
    recipe = load_config("medmnist2d")
    cfg = load_config("medmnist2d", ["train={epochs: 3}"])
    assert cfg.train.epochs == 3
    assert cfg.train.model_dump(exclude={"epochs"}) == recipe.train.model_dump(exclude={"epochs"})
    assert cfg.train.min_steps == 600 and cfg.train.strategy == "full"
    # a free-form mapping inside a section is replaced, not merged: evaluate's data.filter={} clears it
    cfg = load_config(None, ["data.filter={site: A, scanner: X}", "data={filter: {site: B}, modality: DX}"])
    assert cfg.data.filter == {"site": "B"} and cfg.data.modality == "DX"
    assert load_config(None, ["data.filter.site=A", "data.filter={}"]).data.filter == {}


def test_a_mapping_override_the_shell_split_says_to_quote_it():
    """Pasted unquoted, bash cut ``train={epochs: 3, lr: 3e-4}`` into ``train={epochs:``, ``3,``... (refused as
    "override '3,' must look like section.key=value") and expanded ``train={epochs:3,lr:3e-4}`` into
    ``train=epochs:3 train=lr:3e-4`` (refused as pydantic's "Input should be a valid dictionary")."""
    with pytest.raises(ConfigError) as cut:
        load_config("sample_tiny", ["train={epochs:", "3,", "lr:", "3e-4}"])
    assert str(cut.value) == ("override 'train={epochs:': the mapping is not closed; quote the whole override so "
                              "the shell keeps it one argument, e.g. 'train={epochs: 3, lr: 3e-4}'")
    with pytest.raises(ConfigError, match=r"^override 'preprocess.size=\[128,': the list is not closed; .* "
                                          r"e.g. 'preprocess.size=\[128, 128\]'$"):
        load_config("sample_tiny", ["preprocess.size=[128,", "128]"])
    with pytest.raises(ConfigError) as expanded:
        load_config("sample_tiny", ["train=epochs:3", "train=lr:3e-4"])
    assert str(expanded.value) == ("override 'train=epochs:3': train is a section: set one key (train.KEY=value) or "
                                   "give a mapping, quoted so the shell keeps it whole: 'train={KEY: value}'")
    assert load_config("sample_tiny", ["train={epochs: 3, lr: 3e-4}"]).train.epochs == 3  # quoted: one argument


def test_an_empty_section_is_that_sections_defaults(tmp_path):
    """YAML reads ``train:`` with nothing under it as null, which was refused as not a mapping."""
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("name: x\ntrain:\neval:\n")
    assert load_config(cfg).train == Config().train and load_config(cfg).eval == Config().eval
    assert load_config(cfg, ["train.epochs=2"]).train.epochs == 2
    assert load_config(cfg, ["train={epochs: 2}"]).train.epochs == 2
    assert load_config("medmnist2d", ["train=null"]).train == Config().train  # null: the section's defaults


def test_a_bad_value_set_from_python_is_the_one_line_config_error():
    """pydantic's multi-line report (``2 validation errors for TrainConfig ... For further information
    visit ...``) reached Python users who set a value, built a section or validated a dict."""
    from medtl.config import TrainConfig

    lr = "train.lr: Input should be greater than 0; or Input should be 'auto' (1 problem(s); {})"
    cfg = load_config("sample_tiny")
    with pytest.raises(ConfigError) as assigned:
        cfg.train.lr = -1
    assert str(assigned.value) == lr.format("fix the value")
    with pytest.raises(ConfigError) as built:
        TrainConfig(lr=-1)
    assert str(built.value) == lr.format("fix the value")
    with pytest.raises(ConfigError) as validated:
        Config.model_validate({"train": {"lr": -1, "weight_decay": -1}})
    assert str(validated.value) == lr.format("fix the value").replace("1 problem(s)", "2 problem(s)")
    with pytest.raises(ConfigError) as overridden:  # the command line's format, which this one follows
        load_config("sample_tiny", ["train.lr=-1"])
    assert str(overridden.value) == lr.format("fix the override")
    with pytest.raises(ConfigError, match=r"^train.epochz: Extra inputs are not permitted; did you mean 'epochs'\? "):
        cfg.train = {"epochz": 1}
    assert cfg.train.lr == load_config("sample_tiny").train.lr  # a refused value is not kept


def _fields(model, prefix=""):
    """``(key, FieldInfo)`` of every field of ``model`` and of the sections inside it."""
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        yield prefix + name, field
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _fields(field.annotation, f"{prefix}{name}.")


def test_every_config_key_says_what_it_does():
    """76 fields had no description (26 not even a ``#:`` comment), so no reference could be generated."""
    keys = dict(_fields(Config))
    assert len(keys) > 80
    missing = [k for k, f in keys.items() if not (f.description or "").strip()]
    assert not missing, f"config keys without a description: {missing}"


def test_the_config_reference_in_docs_is_the_generated_one(capsys):
    from medtl.cli import main
    from medtl.config import reference_markdown

    text = reference_markdown()
    for key, field in _fields(Config):
        if "." in key:  # each key of each section, with its description
            assert f"| `{key}` |" in text and " ".join(field.description.split()) in text.replace("\\|", "|"), key
    assert "| `train.lr` | float or one of | `0.001` | > 0, `auto` |" in text
    assert "| `preprocess.channels` | int or one of | `1` | `auto` |" in text
    assert "| `data.path` | text | `\"\"` |" in text and "| `model.weights_dir` | text or null | `null` |" in text
    doc = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert doc.read_text(encoding="utf-8") == text, (
        "docs/config.md is stale: regenerate it with `medtl configs --reference > docs/config.md`")
    assert main(["configs", "--reference"]) == 0
    assert capsys.readouterr().out == text


def test_every_key_the_docs_name_exists_with_the_default_they_give():
    """README.md and docs/*.md name config keys (`train.lr_find_steps`, default 100): a renamed key or a
    changed default must not leave them behind."""
    import re

    from medtl.config import _default_text

    keys = dict(_fields(Config))
    root = Path(__file__).resolve().parents[1]
    not_keys = {"model.safetensors", "model.to", "train.lrr"}  # a run's file, a torch call, the typo example
    named = 0
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"`((?:data|preprocess|augment|model|train|eval)\.[a-z_0-9]+)(\.[A-Za-z_]+)?", text):
            if m.group(1) in not_keys or m.group(1).startswith("data.filter."):
                continue
            named += 1
            assert m.group(1) in keys, f"{doc.name} names {m.group(1)!r}, which is not a config key"
        for key, default in re.findall(r"`([a-z]+\.[a-z_]+)`, default ([^\s,;)]+)", text):
            assert _default_text(keys[key].get_default(call_default_factory=True)) == default, (doc.name, key)
    assert named > 50


def test_split_fractions_that_leave_no_training_data_are_a_config_error():
    """make_splits refused them with a ValueError once the data was read: the CLI's "internal error"."""
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.val_fraction=0.6", "data.test_fraction=0.4"])
    assert str(err.value) == ("data: data.val_fraction (0.6) and data.test_fraction (0.4) leave no training data: "
                              "their sum must be below 1 (1 problem(s); fix the override)")
    assert load_config(None, ["data.val_fraction=0.5", "data.test_fraction=0.4"]).data.test_fraction == 0.4


def test_a_disk_cache_without_its_folder_is_a_config_error():
    """``data.cache=disk`` alone reached the dataset as ``ValueError: cache='disk' needs cache_dir``, which the
    CLI printed as an "internal error ... please report it" once the cohort had been read."""
    with pytest.raises(ConfigError) as err:
        load_config("sample_tiny", ["data.cache=disk"])
    assert str(err.value) == ("data: data.cache is disk but data.cache_dir is not set: name the cache's folder "
                              "(data.cache_dir=DIR) or keep the cache in memory (data.cache=memory) "
                              "(1 problem(s); fix the override)")
    assert load_config("sample_tiny", ["data.cache=disk", "data.cache_dir=c"]).data.cache_dir == "c"


@pytest.mark.parametrize("value, bound", [("1.5", "less than or equal to 1"), ("-0.1", "greater than or equal to 0")])
def test_a_decision_threshold_is_a_probability(value, bound):
    """``eval.threshold=1.5`` was taken: every test case negative, without a word."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"eval.threshold={value}"])
    assert str(err.value) == (f"eval.threshold: Input should be {bound}; or Input should be 'youden' or 'val_youden' "
                              "(1 problem(s); fix the override)")
    assert load_config(None, ["eval.threshold=1"]).eval.threshold == 1.0


@pytest.mark.parametrize("override, message", [
    ("augment.zoom=[-1, 1]", "augment.zoom.0: Input should be greater than 0 (1 problem(s); fix the override)"),
    ("augment.shift=-0.2", "augment.shift: Input should be greater than or equal to 0 (1 problem(s); fix the override)"),
    ("augment.shift=2", "augment.shift: Input should be less than 1 (1 problem(s); fix the override)"),
])
def test_augmentation_ranges_are_checked_before_training(override, message):
    """A negative zoom failed inside MONAI's RandZoomd at the first batch; a shift of twice the size was taken."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == message


def test_the_config_loads_without_torch_monai_or_scikit_learn():
    """The schema sits in medtl.data.config and medtl.transforms.config, whose packages imported torch, MONAI
    and scikit-learn (2.7 s warm, 11 s cold) for ``medtl configs --reference`` or a config check."""
    import subprocess
    import sys

    code = ("import sys; from medtl.config import load_config, reference_markdown; load_config('medmnist2d'); "
            "reference_markdown(); print(sorted(m for m in ('torch', 'monai', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_yes_no_value_for_a_number_is_refused_not_read_as_1(tmp_path):
    """pydantic's lax mode read ``epochs: yes`` (YAML 1.1) or ``train.epochs=true`` as 1 epoch, silently."""
    from medtl.config import load_config
    from medtl.errors import ConfigError

    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: yes\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: line 2: train\.epochs: true is a yes/no value .*: give a number"):
        load_config(cfg)
    for item in ("train.epochs=true", "train.lr=true", "model.dropout=false", "eval.threshold=true"):
        with pytest.raises(ConfigError, match=rf"^{item.split('=')[0]}: (true|false) is a yes/no value"):
            load_config("sample_tiny", [item])
    assert load_config("sample_tiny", ["train.keep_epochs=true", "train.amp=off"]).train.keep_epochs is True


@pytest.mark.parametrize("override, message", [
    ("preprocess.percentiles=[0, 150]",
     "preprocess.percentiles.1: Input should be less than or equal to 100 (1 problem(s); fix the override)"),
    ("preprocess.percentiles=[99, 1]", "preprocess: preprocess.percentiles [99, 1]: the low percentile comes first "
                                       "(e.g. [1, 99]) (1 problem(s); fix the override)"),
])
def test_window_percentiles_are_checked_before_training(override, message):
    """150 failed in the first training batch as an internal error; [99, 1] inverted every image silently."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [override, "preprocess.window=percentile"])
    assert str(err.value) == message
    assert load_config(None, ["preprocess.percentiles=[1, 1]"]).preprocess.percentiles == (1.0, 1.0)
