"""One typed experiment config, loaded from YAML and overridable from the command line.

    cfg = load_config("pneumoniamnist_effnet_lite0", ["train.epochs=5", "data.path=x.npz"])

Each part owns its section (``medtl.data.config``, ``medtl.transforms.config``,
``medtl.models.config``, ``medtl.train.config``); this module composes them. Every
field has a sensible default, so a config file only says what differs. Unknown
keys are errors with a did-you-mean hint (a typo must not be silently ignored).

A config is a YAML path or the name of a recipe shipped inside the package
(``medtl configs`` lists them), so an installed medtl runs without a checkout.
"""

from __future__ import annotations

import os
import re
import types
import typing
from typing import Any, Literal, Sequence

import yaml
from pydantic import Field, ValidationError, field_validator

from medtl._fileutil import MAX_YAML_BYTES, MAX_YAML_DEPTH, depth_limited_loader, load_yaml, read_small_text, yaml_problem
from medtl._recipes import list_recipes, recipe_path
from medtl._schema import Section, first_problem, one_line_message, section_model
from medtl.data.config import DataConfig
from medtl.errors import ConfigError, did_you_mean
from medtl.models.config import ModelConfig
from medtl.train.config import EvalConfig, TrainConfig
from medtl.transforms.config import AugmentConfig, PreprocessConfig

__all__ = [
    "AugmentConfig", "Config", "DataConfig", "EvalConfig", "ModelConfig", "PreprocessConfig", "TrainConfig",
    "apply_overrides", "list_recipes", "load_config", "recipe_path", "reference_markdown",
]


class Config(Section):
    """A whole experiment."""

    name: str = Field("experiment", description="The experiment's name, recorded in the model card.")
    task: Literal["classification"] = Field("classification", description="What the model does (classification "
                                            "only, for now).")
    data: DataConfig = Field(default_factory=DataConfig, description="Where the cohort is and how it is split.")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="What the network sees, "
                                         "at training and prediction alike (saved in the model card).")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Training-time augmentation.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The backbone, its starting weights and "
                               "their adaptation.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The fine-tuning recipe.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="How the finished run is scored.")

    @field_validator("data", "preprocess", "augment", "model", "train", "eval", mode="before")
    @classmethod
    def _empty_section(cls, v: Any) -> Any:
        """A section with nothing under it (``train:`` in YAML reads as null) is that section's defaults."""
        return {} if v is None else v

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: str | os.PathLike) -> None:
        from medtl._fileutil import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# --- the reference ---------------------------------------------------------------------------

_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _bounds(metadata: Sequence[Any]) -> list[str]:
    """``[">= 0", "< 1"]`` of a field's pydantic constraints."""
    return [f"{sign} {getattr(m, name):g}" for m in metadata for name, sign in _BOUNDS
            if getattr(m, name, None) is not None]


def _type_text(annotation: Any, metadata: Sequence[Any] = ()) -> tuple[str, str]:
    """``(type, allowed values)`` of a field, as a YAML writer reads them (null, not None)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        inner = [m for a in args[1:] for m in (getattr(a, "metadata", None) or [a])]
        return _type_text(args[0], [*metadata, *inner])
    if origin is Literal:
        return "one of", ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_text(a) for a in args if a is not type(None)]
        kinds = " or ".join(t for t, _ in parts if t != "one of")
        allowed = ", ".join(a for _, a in parts if a)
        if any(t == "one of" for t, _ in parts):
            kinds = f"{kinds} or one of" if kinds else "one of"
        if type(None) in args:
            kinds, allowed = f"{kinds} or null", f"{allowed}, `null`" if allowed else ""
        return kinds, ", ".join(filter(None, [allowed] + _bounds(metadata)))
    if origin in (list, tuple, dict):
        parts = [_type_text(a) for a in args if a is not Ellipsis]
        names = [t for t, _ in parts]
        text = {list: f"list of {names[0]}" if names else "list",
                tuple: f"[{', '.join(names)}]",
                dict: f"mapping of {names[0]} to {names[1]}" if len(names) == 2 else "mapping"}[origin]
        inner = {a for _, a in parts}
        return text, f"each {inner.pop()}" if len(inner) == 1 and "" not in inner else ""
    name = {typing.Any: "any", str: "text", bool: "true/false"}.get(annotation, getattr(annotation, "__name__",
                                                                                         str(annotation)))
    return name, ", ".join(_bounds(metadata))


def _default_text(value: Any) -> str:
    """A default as it is written in YAML (``null``, ``true``, ``[224, 224]``, ``""``)."""
    if isinstance(value, str):
        return value or '""'
    text = yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True, width=10**6)
    return text.strip().removesuffix("...").strip()


def reference_markdown() -> str:
    """The config reference (``docs/config.md``, ``medtl configs --reference``): every section and key with its
    type, default, allowed values and description, generated from the schema so that it cannot go stale."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["# Config reference", "",
             "<!-- generated by `medtl configs --reference > docs/config.md` from medtl's schema: do not edit -->", "",
             "A config is one YAML file of the sections below; every key has a default, so a file says only what "
             "differs (`medtl configs NAME` prints a shipped recipe to start from). Any key can be overridden on the "
             "command line as `section.key=value` (`train.lr=3e-4`, `preprocess.size=[128,128]`); a mapping merges "
             "into its section (`'train={epochs: 3, lr: 3e-4}'`, quoted for the shell), `section=null` or an empty "
             "section is all defaults."]
    sections = {"top level": [k for k, f in Config.model_fields.items() if section_model(f.annotation) is None]}
    sections.update({k: [k] for k, f in Config.model_fields.items() if section_model(f.annotation) is not None})
    for title, keys in sections.items():
        if title == "top level":
            model, prefix, about = Config, "", "Keys outside the sections."
        else:
            model, prefix = Config.model_fields[title].annotation, f"{title}."
            about = (model.__doc__ or "").strip().splitlines()[0]
            keys = list(model.model_fields)
        lines += ["", f"## {title}", "", about, "", "| key | type | default | allowed | description |",
                  "|---|---|---|---|---|"]
        for key in keys:
            field = model.model_fields[key]
            kind, allowed = _type_text(field.annotation, field.metadata)
            default = _default_text(field.get_default(call_default_factory=True))
            lines.append(f"| `{prefix}{key}` | {cell(kind)} | `{cell(default)}` | {cell(allowed)} | "
                         f"{cell(field.description or '')} |")
    return "\n".join(lines) + "\n"


# --- overrides and validation ----------------------------------------------------------------

class _OverrideLoader(depth_limited_loader()):  # type: ignore[misc]
    """YAML for a command-line value, where only ``true``/``false`` are booleans (YAML 1.2): a site
    called ``NO`` or classes ``[no, yes]`` stay text, as typed."""


_OverrideLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_OverrideLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                      list("tTfF"))


def _line_of(text: str, loc: Sequence[Any]) -> int | None:
    """The 1-based line in a YAML ``text`` of the deepest key of a pydantic error ``loc`` found there."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for k in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(kn, vn) for kn, vn in node.value if kn.value == str(k)]
            if not match:
                break
            line, node = match[-1][0].start_mark.line + 1, match[-1][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(k, int) and 0 <= k < len(node.value):
            node = node.value[k]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.epochs=5)")
    try:
        value = yaml.load(raw, Loader=_OverrideLoader) if raw.strip() else None  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        if "levels deep" in str(exc):  # the depth limit: say so, not that the shell cut it
            raise ConfigError(f"override {key.strip()}=...: nested over {MAX_YAML_DEPTH} levels deep "
                              "(flatten it)") from None
        if raw.lstrip().startswith(("{", "[")):  # the shell cut `train={epochs: 3}` at its spaces
            example = "{epochs: 3, lr: 3e-4}" if raw.lstrip().startswith("{") else "[128, 128]"
            raise ConfigError(f"override {item!r}: the {'mapping' if example[0] == '{' else 'list'} is not closed; "
                              f"quote the whole override so the shell keeps it one argument, e.g. "
                              f"'{key.strip()}={example}'") from None
        value = raw
    if isinstance(value, str) and re.search(r"\s#", raw) and not raw.lstrip().startswith(("'", '"')):
        value = raw.strip()  # a command line has no comments: YAML cut "runs/site B #2" short at the '#'
    return key.strip().split("."), value


def _check_key(keys: list[str], item: str) -> None:
    """Refuse an override key the schema does not have, naming the closest real key."""
    model: Any = Config
    for depth, k in enumerate(keys):
        if section_model(model) is None:
            return  # inside a free-form mapping (data.filter, model.kwargs)
        fields = model.model_fields
        if k not in fields:
            where = ".".join(keys[:depth]) or "the config"
            full = [".".join([*keys[:depth], f]) for f in fields]
            hint = did_you_mean(".".join(keys[: depth + 1]), full) or ""
            raise ConfigError(f"override {item!r}: {where} has no key {k!r}{hint}")
        model = fields[k].annotation


def _child(model: Any, key: str) -> Any:
    """The annotation of ``key`` in the config section ``model``; None for a key of no section."""
    field = m.model_fields.get(key) if (m := section_model(model)) else None
    return field.annotation if field is not None else None


def _merge(node: dict[str, Any], key: str, value: Any, model: Any) -> None:
    """``node[key] = value``, except that a mapping given for a config section (``train={epochs: 3}``) is
    merged into what the section already holds, as OmegaConf and Hydra merge: the keys it does not name
    keep their values. A free-form mapping (``data.filter``, ``model.kwargs``) is replaced whole."""
    section = section_model(_child(model, key))
    into = node.get(key)
    if isinstance(value, dict) and section is not None and isinstance(into, (dict, type(None))):
        node[key] = into = dict(into or {})
        for k, v in value.items():
            _merge(into, k, v, section)
    else:
        node[key] = value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``a.b=value`` items on a nested dict (values parsed as YAML: 5, 1e-3, [64,64], null). A mapping
    given for a section merges into it (``train={epochs: 3}`` changes the epochs only); ``train=null``
    resets the section to its defaults."""
    if isinstance(overrides, (str, bytes)):  # iterated, "train.epochs=5" was refused as override 't'
        raise ConfigError(f"overrides are a list of key=value items, got the text {overrides!r} "
                          f"(write [{overrides!r}])")
    for item in overrides:
        keys, value = _parse_override(item)
        _check_key(keys, item)
        node, model = data, Config
        for k in keys[:-1]:
            if node.get(k) is None:  # an empty section (`train:` in YAML) holds nothing yet
                node[k] = {}
            node = node[k]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k!r} is not a section")
            model = _child(model, k)
        if (section_model(_child(model, keys[-1])) is not None and value is not None
                and not isinstance(value, dict)):  # bash expands unquoted train={a:1,b:2} to train=a:1 train=b:2
            raise ConfigError(f"override {item!r}: {keys[-1]} is a section: set one key ({keys[-1]}.KEY=value) or "
                              f"give a mapping, quoted so the shell keeps it whole: '{keys[-1]}={{KEY: value}}'")
        _merge(node, keys[-1], value, model)
    return data


#: The most values (mapping entries, list items) a config may hold once YAML aliases are expanded; the
#: largest shipped recipe holds under 100.
MAX_CONFIG_VALUES = 100_000


def _too_big(data: Any, limit: int = MAX_CONFIG_VALUES) -> bool:
    """Whether ``data`` holds more than ``limit`` values counting every alias as a copy, as saving it does
    (``model_dump``): aliases of aliases in a few lines of YAML (``model.kwargs``) expand beyond memory.
    Stops counting at the limit, so it costs at most ``limit`` steps."""
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            seen += 1
            if seen > limit:
                return True
            stack.append(child)
    return False


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config or shipped recipe (or start from defaults), apply ``key=value`` overrides, validate."""
    data: dict[str, Any] = {}
    p = None
    text = ""
    if path is not None:
        p = recipe_path(path)
        text = read_small_text(p, MAX_YAML_BYTES, ConfigError, "config")
        try:
            data = load_yaml(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({yaml_problem(exc)})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: a config must be a mapping of sections (train:, data:, ...)")
    apply_overrides(data, overrides)
    if _too_big(data):
        raise ConfigError(f"{p or 'the overrides'}: over {MAX_CONFIG_VALUES:,} values once YAML aliases (*name) "
                          "are expanded (write the values out, without aliases of aliases)")
    try:  # pydantic's own validator: the report's keys find their line in the file below
        return Config.__pydantic_validator__.validate_python(data)
    except ValidationError as exc:
        loc, what, n_problems = first_problem(exc, Config)
        where = ".".join(map(str, loc))
        given = [o.split("=", 1)[0].strip() for o in overrides if "=" in o]
        if any(where == k or where.startswith(k + ".") or k.startswith(where + ".") for k in given):
            src, fix = "", "fix the override"  # the command line's value, not the recipe's
        else:
            line = _line_of(text, loc) if p else None
            src = f"{p}: line {line}: " if line else (f"{p}: " if p else "")
            fix = "fix the config or override it"
        raise ConfigError(src + one_line_message(where, what, n_problems, fix)) from None
