"""PACS settings: a YAML file and/or ``MEDTL_PACS_*`` environment variables, never the command line.

    # pacs.yaml  (chmod 600 when it holds a password or token)
    dicomweb:
      url: http://127.0.0.1:8042/dicom-web
      user: medtl                 # HTTP basic auth ...
      password_file: /run/secrets/pacs_password   # ... password from a file (or `password:`)
      # token_file: /run/secrets/pacs_token       # or a bearer token
      timeout: 30
      retries: 2                  # a failed request (refused, timed out, HTTP 408/429/503/504) sent again
    dimse:
      host: 127.0.0.1
      port: 4242
      called_aet: ORTHANC         # the PACS
      calling_aet: MEDTL          # medtl (register it in the PACS with host and listen port)
      listen_port: 11113          # medtl's storage SCP (C-MOVE destination, `medtl listen`)
      listen_host: 127.0.0.1
    push: dicomweb                # how results go back: dicomweb (STOW-RS) or dimse (C-STORE)

Where settings come from, later wins: the file (``--pacs-config FILE``, else ``MEDTL_PACS_CONFIG``,
else ``~/.config/medtl/pacs.yaml`` when it exists), then the environment:
``MEDTL_PACS_URL``, ``MEDTL_PACS_USER``, ``MEDTL_PACS_PASSWORD``, ``MEDTL_PACS_PASSWORD_FILE``,
``MEDTL_PACS_TOKEN``, ``MEDTL_PACS_TOKEN_FILE``, ``MEDTL_PACS_HOST``, ``MEDTL_PACS_PORT``,
``MEDTL_PACS_CALLED_AET``, ``MEDTL_PACS_CALLING_AET``, ``MEDTL_PACS_LISTEN_PORT``,
``MEDTL_PACS_LISTEN_HOST``, ``MEDTL_PACS_PUSH``, ``MEDTL_PACS_TIMEOUT``, ``MEDTL_PACS_RETRIES``.

Secrets are kept out of sight: :meth:`PacsConfig.__repr__` and :meth:`PacsConfig.describe`
show ``***``, a URL carrying ``user:password@`` is refused (the password would sit in shell
history and process lists), and :func:`redact` blanks every known secret in a text before it
is printed or logged.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from medtl._fileutil import MAX_YAML_BYTES, load_yaml, read_small_text, yaml_problem
from medtl.errors import MedtlError

__all__ = ["DEFAULT_CONFIG", "PacsConfig", "PacsError", "load_pacs_config", "redact"]

#: Read when neither ``--pacs-config`` nor ``MEDTL_PACS_CONFIG`` names a file (and it exists).
DEFAULT_CONFIG = Path("~/.config/medtl/pacs.yaml")
_PUSH = ("dicomweb", "dimse")


class PacsError(MedtlError):
    """The PACS could not be reached, refused us, or answered something unusable (one line, no secrets).

    ``fatal``: nothing else can work either (unreachable, credentials refused): a batch stops
    instead of writing the same line for every study.
    """

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass
class PacsConfig:
    """Where the PACS is and who medtl is to it. ``password``/``token`` are never printed."""

    url: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    #: DICOMweb requests tried again after a failure, waiting 2 s, 4 s, ... (dicomweb-client's back-off);
    #: 0: one attempt, so an unreachable server is reported at once
    retries: int = 2
    host: str | None = None
    port: int | None = None
    called_aet: str = "ORTHANC"
    calling_aet: str = "MEDTL"
    listen_host: str = "127.0.0.1"
    listen_port: int = 11113
    push: str = "dicomweb"
    source: str = "defaults"

    def __post_init__(self) -> None:
        if self.url:
            parts = urlsplit(self.url)
            if parts.password is not None or parts.username is not None:
                raise MedtlError("PACS url must not carry user:password@ (it would leak into logs and process "
                                 "lists); put user and password (or password_file) in the PACS config or "
                                 "MEDTL_PACS_USER / MEDTL_PACS_PASSWORD")
            if parts.scheme not in ("http", "https"):
                raise MedtlError(f"PACS url {self.url!r}: must start with http:// or https://")
            self.url = self.url.rstrip("/")
        if self.password and self.token:
            raise MedtlError("PACS config: give a password (basic auth) or a token (bearer), not both")
        if self.password and not self.user:
            raise MedtlError("PACS config: a password needs a user (dicomweb.user or MEDTL_PACS_USER)")
        if self.url and self.secrets and not _private_transport(self.url):
            warnings.warn(f"PACS url {self.url}: the {'token' if self.token else 'password'} is sent unencrypted over "
                          "http:// to another machine (and so are the patients' images); use https://",
                          UserWarning, stacklevel=3)
        if self.push not in _PUSH:
            raise MedtlError(f"PACS config: push must be one of {', '.join(_PUSH)}, got {self.push!r}")
        for name in ("called_aet", "calling_aet"):
            aet = getattr(self, name)
            if not aet or len(aet) > 16 or not aet.isascii() or "\\" in aet:
                raise MedtlError(f"PACS config: {name} {aet!r} is not a valid AE title (1-16 ASCII characters)")

    def __repr__(self) -> str:
        return f"PacsConfig({self.describe()})"

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.token) if s]

    @property
    def auth(self) -> str:
        """``"basic"``, ``"bearer"`` or ``"none"``."""
        return "bearer" if self.token else "basic" if self.user else "none"

    def describe(self) -> str:
        """One line for people and logs: where, who, how (secrets shown as ``***``)."""
        parts = [f"source={self.source}"]
        if self.url:
            who = f", user={self.user}, password=***" if self.auth == "basic" and self.password else \
                f", user={self.user}" if self.user else ", token=***" if self.token else ""
            parts.append(f"dicomweb={self.url} (auth={self.auth}{who})")
        if self.host:
            parts.append(f"dimse={self.called_aet}@{self.host}:{self.port} as {self.calling_aet}")
        parts.append(f"listen={self.calling_aet}@{self.listen_host}:{self.listen_port}")
        parts.append(f"push={self.push}")
        return ", ".join(parts)

    def require_dicomweb(self) -> str:
        if not self.url:
            raise MedtlError("no DICOMweb server configured: set dicomweb.url in the PACS config "
                             "(--pacs-config FILE or MEDTL_PACS_CONFIG) or MEDTL_PACS_URL")
        return self.url

    def require_dimse(self) -> tuple[str, int]:
        if not self.host or not self.port:
            raise MedtlError("no DIMSE peer configured: set dimse.host and dimse.port in the PACS config "
                             "or MEDTL_PACS_HOST / MEDTL_PACS_PORT")
        return self.host, int(self.port)

    def with_(self, **changes: Any) -> "PacsConfig":
        return replace(self, **changes)


def redact(text: str, config: PacsConfig | None = None, secrets: list[str] | None = None) -> str:
    """``text`` with every secret of ``config`` (and ``secrets``) replaced by ``***``."""
    for s in sorted({*(config.secrets if config else []), *(secrets or [])}, key=len, reverse=True):
        if s:
            text = text.replace(s, "***")
    return text


def _private_transport(url: str) -> bool:
    """Whether what is sent to ``url`` stays unreadable on the way: https://, or http:// to this machine."""
    parts = urlsplit(url)
    if parts.scheme == "https" or parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        return False


def _read_secret_file(path: str, what: str) -> str:
    p = Path(path).expanduser()
    value = read_small_text(p, 1 << 16, MedtlError, f"{what} file").strip()
    if not value:
        raise MedtlError(f"{p}: the {what} file is empty")
    return value


def _warn_if_readable_by_others(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.warn(f"{path} holds a PACS secret and is readable by other users; chmod 600 {path}",
                      UserWarning, stacklevel=3)


_FILE_KEYS = {
    "dicomweb": {"url": "url", "user": "user", "password": "password", "password_file": "password_file",
                 "token": "token", "token_file": "token_file", "timeout": "timeout",
                 "retries": "retries"},
    "dimse": {"host": "host", "port": "port", "called_aet": "called_aet", "calling_aet": "calling_aet",
              "listen_port": "listen_port", "listen_host": "listen_host"},
}
_ENV = {"URL": "url", "USER": "user", "PASSWORD": "password", "PASSWORD_FILE": "password_file", "TOKEN": "token",
        "TOKEN_FILE": "token_file", "TIMEOUT": "timeout", "HOST": "host", "PORT": "port",
        "CALLED_AET": "called_aet", "CALLING_AET": "calling_aet", "LISTEN_PORT": "listen_port",
        "LISTEN_HOST": "listen_host", "PUSH": "push", "RETRIES": "retries"}
_INTS = ("port", "listen_port", "retries")
#: Keys of a PACS file whose value is a secret (not a path to one), never echoed in an error
_SECRET_KEYS = ("password", "token")


#: What a number setting must be: (low, high, what it is); ``high`` None: no upper bound
_NUMBERS = {"port": (1, 65535, "a port number (1-65535)"), "listen_port": (1, 65535, "a port number (1-65535)"),
            "retries": (0, None, "a number of attempts (0 or more)"), "timeout": (0, None, "seconds (above 0)")}


def _number(key: str, value: Any, where: str) -> int | float:
    """A port, retry count or timeout from the file (YAML read it) or the environment (text), refused unless it
    is one as written: YAML reads ``port: yes`` as true (port 1) and ``timeout: off`` as false (0 s)."""
    low, high, what = _NUMBERS[key]
    number: int | float | None = None
    if not isinstance(value, bool):
        try:
            number = float(value) if key == "timeout" else int(str(value).strip())
        except (TypeError, ValueError):
            pass
    ok = number is not None and (number > low if key == "timeout" else number >= low) and (
        high is None or number <= high) and (key != "timeout" or number < float("inf"))
    if not ok:
        why = " (YAML reads yes/no/on/off as true/false)" if isinstance(value, bool) else ""
        raise MedtlError(f"{where} must be {what}, got {value!r}{why}")
    return number


def _check_file_value(path: Path, key: str, value: Any) -> None:
    """Refuse a value that is not one setting (a list, a mapping) and a secret YAML did not read as the text
    typed (``password: off`` is False, ``0123`` the number 83): the key and what is wrong, never the value."""
    what = "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else None
    if what:
        raise MedtlError(f"{path}: {key} must be one value, not {what} (the value is not shown)")
    if key.rsplit(".", 1)[-1] in _SECRET_KEYS and value is not None and not isinstance(value, str):
        raise MedtlError(f"{path}: {key} is read by YAML as {type(value).__name__}, not text (the value is not "
                         f"shown); quote it: {key.rsplit('.', 1)[-1]}: '...'")


def _from_file(path: Path) -> dict[str, Any]:
    import yaml

    text = read_small_text(path, MAX_YAML_BYTES, MedtlError, "PACS config")
    try:
        raw = load_yaml(text) or {}
    except yaml.YAMLError as exc:  # the reason without the file's text: a line may hold a password
        raise MedtlError(f"{path}: not valid YAML ({yaml_problem(exc, hide_values=True)})") from None
    if not isinstance(raw, dict):
        raise MedtlError(f"{path}: a PACS config is a mapping (dicomweb:, dimse:, push:)")
    out: dict[str, Any] = {}
    for section, value in raw.items():
        if section == "push":
            out["push"] = value
            continue
        if section not in _FILE_KEYS or not isinstance(value, dict):
            raise MedtlError(f"{path}: unknown PACS config section {section!r} (use dicomweb, dimse, push)")
        for key, v in value.items():
            if key not in _FILE_KEYS[section]:
                raise MedtlError(f"{path}: unknown key {section}.{key} (known: {', '.join(_FILE_KEYS[section])})")
            _check_file_value(path, f"{section}.{key}", v)
            out[_FILE_KEYS[section][key]] = v
    if any(k in out for k in ("password", "token")):
        _warn_if_readable_by_others(path)
    return out


def load_pacs_config(path: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> PacsConfig:
    """Settings from ``path`` (or ``MEDTL_PACS_CONFIG``, or ``~/.config/medtl/pacs.yaml``), then ``MEDTL_PACS_*``."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    sources = []
    file = Path(path).expanduser() if path else Path(env["MEDTL_PACS_CONFIG"]).expanduser() \
        if env.get("MEDTL_PACS_CONFIG") else None
    if file is None and DEFAULT_CONFIG.expanduser().is_file():
        file = DEFAULT_CONFIG.expanduser()
    if file is not None:
        if not file.is_file():
            raise MedtlError(f"{file}: no such PACS config file")
        values.update(_from_file(file))
        sources.append(str(file))
    from_env = {v: env[f"MEDTL_PACS_{k}"] for k, v in _ENV.items() if env.get(f"MEDTL_PACS_{k}")}
    if from_env:
        # a secret given one way replaces the other ways of giving it
        if {"password", "password_file", "token", "token_file"} & from_env.keys():
            for k in ("password", "password_file", "token", "token_file"):
                values.pop(k, None)
        values.update(from_env)
        sources.append("environment")
    if values.get("password_file"):
        values["password"] = _read_secret_file(values.pop("password_file"), "password")
    values.pop("password_file", None)
    if values.get("token_file"):
        values["token"] = _read_secret_file(values.pop("token_file"), "token")
    values.pop("token_file", None)
    known = {f.name for f in fields(PacsConfig)}
    for key in (*_INTS, "timeout"):
        if values.get(key) is not None:
            where = f"MEDTL_PACS_{key.upper()}" if key in from_env else \
                f"{file}: {next(s for s, ks in _FILE_KEYS.items() if key in ks)}.{key}"
            values[key] = _number(key, values[key], where)
    for key in ("url", "user", "password", "token", "host", "called_aet", "calling_aet", "listen_host", "push"):
        if values.get(key) is not None:
            values[key] = str(values[key])
    values["source"] = " + ".join(sources) or "defaults"
    return PacsConfig(**{k: v for k, v in values.items() if k in known})
