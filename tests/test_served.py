"""Served mode (PRUNEKIT_SERVE=1): folders confined to the configured roots, no server paths and
no tracebacks shown, a low upload limit, sign-in when an OIDC provider is configured. The app is
driven headless (AppTest), as a visitor would type into the sidebar."""

import os
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from streamlit import config
from streamlit.testing.v1 import AppTest

from prunekit import errors
from prunekit.ui import served


@pytest.fixture
def server(tmp_path, tiny_model_dir, tiny_speech_commands, monkeypatch):
    """A served app's folders: srv/models/tiny and srv/data/sc inside the roots; a model and a
    dataset outside them, each also reachable by a symbolic link planted inside the roots."""
    srv, outside = tmp_path / "srv", tmp_path / "outside"
    shutil.copytree(tiny_model_dir, srv / "models" / "tiny")
    shutil.copytree(tiny_model_dir, outside / "model")
    shutil.copytree(tiny_speech_commands, srv / "data" / "sc")
    shutil.copytree(tiny_speech_commands, outside / "data")
    (srv / "models" / "escape").symlink_to(outside / "model")
    (srv / "data" / "leak").symlink_to(outside / "data")
    monkeypatch.setenv("PRUNEKIT_SERVE", "1")
    monkeypatch.setenv("PRUNEKIT_MODEL_ROOTS", str(srv / "models"))
    monkeypatch.setenv("PRUNEKIT_DATA_ROOTS", str(srv / "data"))
    monkeypatch.delenv("PRUNEKIT_SERVE_HUB", raising=False)
    _forget_shared_caches()  # a source is named relative to the roots: another test's "tiny" differs
    # gate() sets the client options for the whole (served) process; make serve sets the upload limit.
    keys = ("client.showErrorDetails", "client.toolbarMode", "server.maxUploadSize")
    before = {k: config.get_option(k) for k in keys}
    config.set_option("server.maxUploadSize", served.UPLOAD_MB)
    yield tmp_path
    for key, value in before.items():
        config.set_option(key, value)
    errors.set_message_filter(None)
    _forget_shared_caches()


def _forget_shared_caches():
    from prunekit.ui import _cached_model, _dense_evaluations, cached_dataset

    for cached in (_cached_model, cached_dataset, _dense_evaluations):
        cached.clear()


def _run(*, user=None, secrets=None, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    if user is not None:
        at.user = user
    if secrets is not None:
        at.secrets.update(secrets)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(at) -> list[str]:
    """Everything the visitor reads on the page (messages, markdown, titles, metrics)."""
    kinds = ("error", "warning", "info", "success", "markdown", "caption", "title", "subheader")
    found = [str(e.value) for kind in kinds for e in getattr(at, kind)]
    return found + [f"{m.label} {m.value}" for m in at.metric]


def _leaks(at, tmp_path: Path) -> list[str]:
    return [t for t in _texts(at) if str(tmp_path) in t or os.path.realpath(tmp_path) in t]


def test_a_folder_inside_the_roots_loads_by_its_name(server):
    at = _run(
        model_kind="Local folder",
        model_ref="tiny",
        data_kind="Speech Commands v2 folder",
        data_ref="sc",
    )
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layers"] == "2"
    assert any(k.startswith("Accuracy on the test split") for k in metrics)
    assert config.get_option("client.showErrorDetails") == "none"  # no tracebacks for visitors
    assert not _leaks(at, server)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (
            "../outside/model",
            "'../outside/model': '..' is not allowed; name a model inside the model folders.",
        ),
        ("tiny/../../outside/model", "'..' is not allowed"),
        ("{tmp}/outside/model", "is outside the model folders this server offers: name a model inside them."),
        ("/etc", "'<server path>' is outside the model folders this server offers"),  # typed, yet redacted
        ("~/models", "'~/models': '~' is not allowed"),
        ("escape", "'escape' leads outside the model folders (a symbolic link): refused."),
        ("no-such-model", "No model folder at no-such-model"),
    ],
)
def test_model_folders_outside_the_roots_are_refused(server, ref, message):
    ref = ref.format(tmp=server)
    at = _run(model_kind="Local folder", model_ref=ref)
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert not at.metric  # nothing was loaded
    assert not _leaks(at, server) or ref.startswith(str(server))  # only what the visitor typed


@pytest.mark.parametrize(
    ("kind", "ref", "message"),
    [
        ("Speech Commands v2 folder", "../outside/data", "'..' is not allowed; name a dataset inside"),
        ("Folder per class", "/etc", "'<server path>' is outside the dataset folders this server offers"),
        ("Folder per class", "leak", "'leak' leads outside the dataset folders (a symbolic link)"),
        ("CSV manifest", "/etc/passwd.csv", "'<server path>' is outside the dataset folders"),
        ("Speech Commands v2 folder", "missing", "not in the Speech Commands layout"),
    ],
)
def test_dataset_folders_outside_the_roots_are_refused(server, kind, ref, message):
    at = _run(model_kind="Local folder", model_ref="tiny", data_kind=kind, data_ref=ref)
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert not any(k.startswith("Accuracy") for k in (m.label for m in at.metric))
    assert not _leaks(at, server)


def test_hub_ids_are_refused_unless_allowed(server, monkeypatch):
    at = _run(model_kind="Hugging Face hub id", model_ref="MIT/ast-finetuned-speech-commands-v2")
    assert any("loads no hub ids" in e.value for e in at.error), [e.value for e in at.error]
    monkeypatch.setenv("PRUNEKIT_SERVE_HUB", "1")
    # A "hub id" that names a folder of the server's checkout would be read from disk: refused.
    at = _run(model_kind="Hugging Face hub id", model_ref="prunekit/demo_model")
    assert any("'prunekit/demo_model' is not a hub id this server loads." in e.value for e in at.error)


def test_the_demo_needs_no_roots(server, monkeypatch):
    monkeypatch.delenv("PRUNEKIT_MODEL_ROOTS")
    at = _run(data_kind="Folder per class")
    assert {m.label: m.value for m in at.metric}["Layers"] == "6"
    at = _run(model_kind="Local folder", model_ref="tiny", data_kind="Folder per class")
    assert any("offers no model folders (PRUNEKIT_MODEL_ROOTS is not set)" in e.value for e in at.error)


def test_a_large_upload_limit_or_a_bad_root_stops_the_app(server, monkeypatch):
    config.set_option("server.maxUploadSize", 200)
    at = _run()
    assert [e.value for e in at.error] == [
        "This app is not safe to serve: uploads may be 200 MB: start it with --server.maxUploadSize 20 "
        "(`make serve` does)."
    ]
    assert not at.metric
    monkeypatch.setenv("PRUNEKIT_DATA_ROOTS", "relative/data")
    at = _run()
    assert any(
        "PRUNEKIT_DATA_ROOTS: relative/data is not an absolute path to a folder" in e.value for e in at.error
    )


AUTH = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "test-secret",
        "client_id": "prunekit",
        "client_secret": "not-a-secret",
        "server_metadata_url": "https://id.example.org/.well-known/openid-configuration",
    }
}


def test_visitors_sign_in_when_a_provider_is_configured(server):
    at = _run(secrets=AUTH, user={"is_logged_in": False})
    assert [b.label for b in at.button] == ["Sign in"]
    assert not at.metric and not at.sidebar.radio  # no page, no sidebar until signed in
    at = _run(
        secrets=AUTH,
        user={"is_logged_in": True, "name": "Ada", "email": "ada@example.org"},
        data_kind="Folder per class",  # no dataset typed: the demo set is not evaluated
    )
    assert {m.label: m.value for m in at.metric}["Layers"] == "6"
    assert "Signed in: Ada" in [c.value for c in at.sidebar.caption]


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("authlib") is not None, reason="Authlib is installed"
)
def test_sign_in_without_authlib_says_what_to_install(server):
    at = _run(secrets=AUTH, user={"is_logged_in": False})
    at.button(key="served_login").click().run()
    assert any("Authlib is not installed" in e.value for e in at.error)


def test_without_a_provider_there_is_no_sign_in(server):
    at = _run(user={}, data_kind="Folder per class")
    assert "Sign in" not in [b.label for b in at.button]
    assert {m.label: m.value for m in at.metric}["Layers"] == "6"


def test_not_served_nothing_is_confined(monkeypatch, tmp_path):
    monkeypatch.delenv("PRUNEKIT_SERVE", raising=False)
    assert served.model_location("../x") == "../x"
    assert served.dataset_location("folders:/etc") == "folders:/etc"
    assert served.gate() is True


def test_redact_hides_server_paths(server):
    models = server / "srv" / "models"
    from prunekit.store import cache_dir

    assert served.redact(f"No model folder at {models}/tiny/x") == "No model folder at tiny/x"
    assert served.redact(f"{models} is empty") == "the model folders is empty"
    assert served.redact(f"wrote {cache_dir()}/scores/a.csv") == "wrote cache/scores/a.csv"
    assert served.redact("read /etc/passwd, then /opt/x.wav") == "read <server path>, then <server path>"
    assert served.redact("1/2 of https://example.org/a W_q/W_k") == "1/2 of https://example.org/a W_q/W_k"


def test_the_app_binds_to_this_machine_unless_served():
    assert 'address = "127.0.0.1"' in (REPO / ".streamlit" / "config.toml").read_text()
    serve = (REPO / "Makefile").read_text().split("\nserve:")[1].split("\n\n")[0]
    assert "PRUNEKIT_SERVE=1" in serve and f"--server.maxUploadSize {served.UPLOAD_MB}" in serve
    assert "--client.showErrorDetails none" in serve


def test_served_the_embedded_models_and_generated_sets_pass_as_they_are(server):
    for model in ("demo", "demo-tagging"):
        assert served.model_location(model) == model
    for data in ("demo", "demo-tagging"):
        assert served.dataset_location(data) == data
