"""PACS settings: file, environment, secrets kept out of sight."""

from __future__ import annotations

import os

import pytest

from medtl.errors import MedtlError
from medtl.pacs.config import PacsConfig, load_pacs_config, redact


def test_file_then_environment_and_secrets_redacted(tmp_path):
    (tmp_path / "pw").write_text("hunter2-secret\n")
    cfg = tmp_path / "pacs.yaml"
    cfg.write_text(f"dicomweb:\n  url: https://pacs.example/dicom-web/\n  user: ai\n  password_file: {tmp_path / 'pw'}\n"
                   "dimse:\n  host: pacs\n  port: 104\n  called_aet: PACS\npush: dimse\n")
    os.chmod(cfg, 0o600)
    c = load_pacs_config(cfg, env={})
    assert (c.url, c.user, c.password, c.host, c.port, c.called_aet, c.push) == (
        "https://pacs.example/dicom-web", "ai", "hunter2-secret", "pacs", 104, "PACS", "dimse")
    for text in (repr(c), c.describe(), str(c)):
        assert "hunter2" not in text and "***" in text
    assert redact("auth hunter2-secret failed", c) == "auth *** failed"
    c = load_pacs_config(cfg, env={"MEDTL_PACS_TOKEN": "tok-123", "MEDTL_PACS_PORT": "11112"})
    assert c.token == "tok-123" and c.password is None and c.port == 11112 and c.auth == "bearer"
    assert "tok-123" not in repr(c)


def test_bad_settings_are_one_line(tmp_path):
    with pytest.raises(MedtlError, match="must not carry user:password@"):
        PacsConfig(url="http://a:b@host/dicom-web")
    with pytest.raises(MedtlError, match="not both"):
        PacsConfig(url="http://h", user="u", password="p", token="t")
    with pytest.raises(MedtlError, match="not a valid AE title"):
        PacsConfig(calling_aet="A" * 17)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dicomweb:\n  pasword: x\n")
    with pytest.raises(MedtlError, match="unknown key dicomweb.pasword"):
        load_pacs_config(cfg, env={})
    with pytest.raises(MedtlError, match="port number"):
        load_pacs_config(None, env={"MEDTL_PACS_PORT": "abc"})
    with pytest.raises(MedtlError, match=r"MEDTL_PACS_RETRIES must be a number of attempts \(0 or more\)"):
        load_pacs_config(None, env={"MEDTL_PACS_RETRIES": "-1"})


def test_a_secret_in_a_world_readable_file_warns(tmp_path):
    cfg = tmp_path / "pacs.yaml"
    cfg.write_text("dicomweb:\n  url: http://127.0.0.1:8042/dicom-web\n  user: u\n  password: p\n")
    os.chmod(cfg, 0o644)
    with pytest.warns(UserWarning, match="chmod 600"):
        load_pacs_config(cfg, env={})


def test_retries_is_how_many_times_a_failed_request_is_sent_again(tmp_path, busy_dicomweb):
    """A server answering 503 (busy) counts the requests: ``retries: 1`` sends the search twice,
    ``retries: 0`` once, and each ends in one clear error."""
    from medtl.pacs import PacsError
    from medtl.pacs.dicomweb import DicomWebPacs

    url, hits = busy_dicomweb
    cfg = tmp_path / "pacs.yaml"
    for retries in (1, 0):
        cfg.write_text(f"dicomweb:\n  url: {url}\n  retries: {retries}\n")
        pacs = load_pacs_config(cfg, env={})
        assert pacs.retries == retries
        hits.clear()
        with pytest.raises(PacsError, match=r"^echo \(QIDO-RS study search\): "):  # the step `pacs echo` ran
            DicomWebPacs(pacs).ping()
        assert len(hits) == retries + 1, hits
    assert load_pacs_config(None, env={}).retries == 2
    assert load_pacs_config(None, env={"MEDTL_PACS_RETRIES": "0"}).retries == 0


def test_a_section_given_twice_is_refused_not_half_dropped(tmp_path):
    """PyYAML kept the second ``dicomweb:`` alone: the server's url vanished and the user stayed."""
    cfg = tmp_path / "pacs.yaml"
    cfg.write_text("dicomweb:\n  url: http://pacs.local\ndicomweb:\n  user: bob\n")
    with pytest.raises(MedtlError, match=r"pacs.yaml: not valid YAML \(line 3: key 'dicomweb' given twice \(first on "
                                         r"line 1; keep one\)\)$"):
        load_pacs_config(cfg, env={})


@pytest.mark.parametrize("value, message", [
    ("*Hunter2-Secret", "not valid YAML (line 4: found undefined alias (not shown))"),
    ("!Hunter2-Secret x", "not valid YAML (line 4: could not determine a constructor for the tag (not shown))"),
    ('"Hunter2-Secret\\q"', "not valid YAML (line 4: found unknown escape character (not shown))"),
    ("`Hunter2-Secret", "not valid YAML (line 4: found character (not shown) that cannot start any token)"),
    ("[Hunter2-Secret]", "dicomweb.password must be one value, not a list (the value is not shown)"),
    ("{Hunter2-Secret: 1}", "dicomweb.password must be one value, not a mapping (the value is not shown)"),
    ("off", "dicomweb.password is read by YAML as bool, not text (the value is not shown); quote it: password: '...'"),
    ("0123", "dicomweb.password is read by YAML as int, not text (the value is not shown); quote it: password: '...'"),
])
def test_a_bad_password_says_why_without_its_value(tmp_path, value, message):
    """The YAML error said only "line 4 not valid YAML" so as not to echo a secret; PyYAML's own reason
    quotes the alias, tag or character it stopped at, and YAML 1.1 read ``off`` as False, ``0123`` as 83."""
    cfg = tmp_path / "pacs.yaml"
    cfg.write_text(f"dicomweb:\n  url: http://pacs.local\n  user: bob\n  password: {value}\n")
    cfg.chmod(0o600)
    with pytest.raises(MedtlError) as err:
        load_pacs_config(cfg, env={})
    assert str(err.value) == f"{cfg}: {message}"
    assert "Hunter2" not in str(err.value) and "0123" not in str(err.value) and "False" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("dimse:\n  port: yes\n", "dimse.port must be a port number (1-65535), got True (YAML reads yes/no/on/off as "
                              "true/false)"),
    ("dimse:\n  port: 4242.7\n", "dimse.port must be a port number (1-65535), got 4242.7"),
    ("dimse:\n  listen_port: 99999\n", "dimse.listen_port must be a port number (1-65535), got 99999"),
    ("dicomweb:\n  timeout: off\n", "dicomweb.timeout must be seconds (above 0), got False (YAML reads yes/no/on/off "
                                    "as true/false)"),
    ("dicomweb:\n  timeout: -5\n", "dicomweb.timeout must be seconds (above 0), got -5"),
    ("dicomweb:\n  retries: -1\n", "dicomweb.retries must be a number of attempts (0 or more), got -1"),
])
def test_a_bad_number_names_the_file_and_key_and_is_never_bent_into_one(tmp_path, text, message):
    """``port: yes`` became port 1, ``4242.7`` port 4242, ``timeout: off`` 0 s, port 99999 was taken; and the
    error said "PACS config: port ..." without the file or the section."""
    cfg = tmp_path / "pacs.yaml"
    cfg.write_text(text)
    with pytest.raises(MedtlError) as err:
        load_pacs_config(cfg, env={})
    assert str(err.value) == f"{cfg}: {message}"
    with pytest.raises(MedtlError, match=r"^MEDTL_PACS_PORT must be a port number \(1-65535\), got 'abc'$"):
        load_pacs_config(None, env={"MEDTL_PACS_PORT": "abc"})
    assert load_pacs_config(None, env={"MEDTL_PACS_PORT": "104", "MEDTL_PACS_TIMEOUT": "2.5"}).port == 104


def test_a_huge_deep_or_binary_config_or_secret_file_is_one_line(tmp_path):
    """A PACS config of 200 MB took minutes, a nested one or one not UTF-8 was an internal error, and a
    password_file of /dev/zero filled the memory."""
    cases = {"big.yaml": b"#" * (1 << 18) + b"\n", "deep.yaml": b"dicomweb: " + b"[" * 1000 + b"]" * 1000,
             "utf16.yaml": "dicomweb:\n  url: http://h\n".encode("utf-16")}
    messages = {"big.yaml": r"big.yaml: over 262,144 bytes, too large for a PACS config",
                "deep.yaml": r"deep.yaml: not valid YAML \(line 1: nested over 100 levels deep",
                "utf16.yaml": r"utf16.yaml: not UTF-8 text \(save the PACS config as UTF-8\)"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(MedtlError, match=messages[name]):
            load_pacs_config(tmp_path / name, env={})
    cfg = tmp_path / "pacs.yaml"
    cfg.write_text("dicomweb:\n  url: http://h/dicom-web\n  user: u\n  password_file: /dev/zero\n")
    cfg.chmod(0o600)
    with pytest.raises(MedtlError, match=r"^/dev/zero: over 65,536 bytes, too large for a password file"):
        load_pacs_config(cfg, env={})


def test_a_secret_sent_unencrypted_to_another_machine_is_warned_about():
    """Basic auth and bearer tokens over http:// travel in clear text (the patient data too); over loopback or
    https:// they do not, and nothing is said."""
    import warnings

    with pytest.warns(UserWarning, match=r"http://pacs.hospital/dicom-web: the password is sent unencrypted"):
        PacsConfig(url="http://pacs.hospital/dicom-web", user="ai", password="s3cret-pw")
    with pytest.warns(UserWarning, match="the token is sent unencrypted") as seen:
        PacsConfig(url="http://10.1.2.3:8042/dicom-web", token="tok-123")
    assert "tok-123" not in str(seen[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PacsConfig(url="https://pacs.hospital/dicom-web", user="ai", password="s3cret-pw")
        PacsConfig(url="http://127.0.0.1:8042/dicom-web", user="ai", password="s3cret-pw")
        PacsConfig(url="http://localhost:8042/dicom-web", token="tok-123")
        PacsConfig(url="http://[::1]:8042/dicom-web", token="tok-123")
        PacsConfig(url="http://pacs.hospital/dicom-web")
