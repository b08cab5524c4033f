"""Served mode: the app shown to other people (``PRUNEKIT_SERVE=1``, started by ``make serve``).

Off by default, and then nothing here changes the app (it binds to 127.0.0.1:
``.streamlit/config.toml``). When on:

* model and dataset folders are confined to configured roots (``PRUNEKIT_MODEL_ROOTS``,
  ``PRUNEKIT_DATA_ROOTS``, each a ``:``-separated list of folders). A visitor names a folder
  relative to a root; ``..``, ``~``, an absolute path outside the roots and a symbolic link that
  leads out of them are refused. Hub ids are refused unless ``PRUNEKIT_SERVE_HUB=1`` (each one
  is a download on the server);
* messages show no server paths (``redact``, installed as prunekit's error-message filter) and
  uncaught errors no traceback (``client.showErrorDetails = "none"``);
* uploads are limited to ``UPLOAD_MB``: the app refuses to run when ``server.maxUploadSize`` is
  higher, or when Streamlit's XSRF or CORS protection is off;
* visitors sign in with ``st.login`` when ``.streamlit/secrets.toml`` has an ``[auth]`` section
  (any OpenID Connect provider; Streamlit needs Authlib for it). Without one there is no
  sign-in: such a server must stay on localhost or behind a proxy that authenticates.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path, PurePosixPath

import streamlit as st

from prunekit import errors
from prunekit.data.datasets import DATA_KINDS
from prunekit.data.manifest import PRESETS
from prunekit.errors import ConfigurationError
from prunekit.models.loading import EMBEDDED_MODELS
from prunekit.store import cache_dir

__all__ = [
    "ROOTS_ENV",
    "UPLOAD_MB",
    "account",
    "confine",
    "dataset_location",
    "gate",
    "hub_allowed",
    "model_location",
    "redact",
    "roots",
    "serving",
]

ROOTS_ENV = {"model": "PRUNEKIT_MODEL_ROOTS", "dataset": "PRUNEKIT_DATA_ROOTS"}
UPLOAD_MB = 20  # a 20 MB upload decodes to at most 5 minutes (Listen's cap) of samples
_ON = {"1", "true", "yes", "on"}
_OFF = {"", "0", "false", "no", "off"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_REPO = Path(__file__).resolve().parents[2]
# An absolute path: a "/" not inside a word, a number ("1/2"), a URL ("https://") or a label.
_ABSOLUTE = re.compile(r"(?<![\w.:/~<>-])/[^\s'\",;()\[\]{}<>]+")


def _flag(name: str) -> bool:
    text = os.environ.get(name, "").strip().lower()
    if text in _ON | _OFF:
        return text in _ON
    raise ConfigurationError(f"{name} must be 1 or 0, got {os.environ[name]!r}")


def serving() -> bool:
    """Whether the app is served to others (``PRUNEKIT_SERVE=1``)."""
    return _flag("PRUNEKIT_SERVE")


def hub_allowed() -> bool:
    """Whether a served app loads hub ids (``PRUNEKIT_SERVE_HUB=1``); always true when not served."""
    return not serving() or _flag("PRUNEKIT_SERVE_HUB")


def roots(kind: str) -> list[Path]:
    """The folders ``kind`` ("model" or "dataset") may come from in served mode, absolute."""
    name = ROOTS_ENV[kind]
    found = []
    for text in filter(None, (t.strip() for t in os.environ.get(name, "").split(os.pathsep))):
        path = Path(text).expanduser()
        if not path.is_absolute() or not path.is_dir():
            raise ConfigurationError(f"{name}: {text} is not an absolute path to a folder")
        found.append(Path(os.path.abspath(path)))
    return found


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def confine(text: str, kind: str) -> Path:
    """``text``, a folder or file a visitor typed, as a real path inside one of the ``kind``
    roots (relative names are looked up in each root in turn). Raises ConfigurationError for
    ``..``, ``~``, an absolute path outside the roots and a path whose symbolic links lead out."""
    given = text.strip()
    allowed = roots(kind)
    if not allowed:
        raise ConfigurationError(
            f"This server offers no {kind} folders ({ROOTS_ENV[kind]} is not set): use the embedded demo."
        )
    if not given:
        raise ConfigurationError(f"No {kind} folder given.")
    if ".." in PurePosixPath(given).parts:
        raise ConfigurationError(f"'{given}': '..' is not allowed; name a {kind} inside the {kind} folders.")
    if given.startswith("~"):
        raise ConfigurationError(f"'{given}': '~' is not allowed; name a {kind} inside the {kind} folders.")
    path = Path(given)
    if path.is_absolute():
        target = Path(os.path.normpath(path))
    else:
        candidates = [root / path for root in allowed]
        target = next((c for c in candidates if os.path.lexists(c)), candidates[0])
    root = next((r for r in allowed if _inside(target, r)), None)
    if root is None:
        raise ConfigurationError(
            f"'{given}' is outside the {kind} folders this server offers: name a {kind} inside them."
        )
    real = Path(os.path.realpath(target))
    if not _inside(real, Path(os.path.realpath(root))):
        raise ConfigurationError(f"'{given}' leads outside the {kind} folders (a symbolic link): refused.")
    return real


def model_location(source: str) -> str:
    """What ``load_model`` should read for the sidebar's ``source``: itself when not served;
    served, an embedded demo, a confined folder or (when allowed) a hub id."""
    text = source.strip()
    if not serving() or text in EMBEDDED_MODELS:
        return source
    local = text.startswith(("/", ".", "~")) or ".." in PurePosixPath(text).parts
    if not local and _HUB_ID.match(text) and not any(os.path.lexists(r / text) for r in roots("model")):
        if not hub_allowed():
            raise ConfigurationError(
                f"'{text}' is not in the model folders this server offers, and it loads no hub ids."
            )
        if os.path.lexists(text):  # load_model would read it relative to the server's folder
            raise ConfigurationError(f"'{text}' is not a hub id this server loads.")
        return text
    return str(confine(text, "model"))


def dataset_location(spec: str) -> str:
    """What ``open_dataset`` should read for the sidebar's ``spec`` (``data_source``): itself when
    not served; served, a generated set ("demo", "demo-tagging") or the spec with its folder or
    manifest confined."""
    text = spec.strip()
    if not serving() or text in ("demo", "demo-tagging"):
        return spec
    kind, sep, rest = text.partition(":")
    if sep and (kind in DATA_KINDS[1:] or kind in PRESETS):
        return f"{kind}:{confine(rest, 'dataset')}"
    return str(confine(text, "dataset"))


def _known_paths() -> list[tuple[str, str]]:
    """(server path, what a visitor sees instead), longest first."""
    pairs = []
    for kind in ROOTS_ENV:
        try:
            found = roots(kind)
        except ConfigurationError:
            found = []
        for root in found:
            for form in {str(root), os.path.realpath(root)}:
                pairs += [(form + "/", ""), (form, f"the {kind} folders")]
    for path, label in ((cache_dir(), "cache"), (_REPO, "prunekit"), (Path.home(), "~")):
        for form in {str(path), os.path.realpath(path)}:
            pairs += [(form + "/", f"{label}/"), (form, label)]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def redact(text: str) -> str:
    """``text`` without server paths: a root's files by their name inside it, the cache and the
    checkout by name, any other absolute path as ``<server path>``."""
    for path, shown in _known_paths():
        text = text.replace(path, shown)
    return _ABSOLUTE.sub("<server path>", text)


def _settings_problems() -> list[str]:
    problems = []
    upload = st.get_option("server.maxUploadSize")
    if upload > UPLOAD_MB:
        problems.append(
            f"uploads may be {upload} MB: start it with --server.maxUploadSize {UPLOAD_MB} (`make serve` does)"
        )
    if not st.get_option("server.enableXsrfProtection"):
        problems.append("XSRF protection is off (server.enableXsrfProtection)")
    if not st.get_option("server.enableCORS"):
        problems.append("CORS protection is off (server.enableCORS)")
    for kind in ROOTS_ENV:
        try:
            roots(kind)
        except ConfigurationError as exc:
            problems.append(str(exc))
    return problems


def _auth() -> dict | None:
    """The ``[auth]`` section of ``.streamlit/secrets.toml``, or None when sign-in is not set up."""
    try:
        section = st.secrets.get("auth")
    except FileNotFoundError:  # no secrets file at all
        return None
    return dict(section) if section else None


def _provider(auth: dict) -> str | None:
    """The provider ``st.login`` names: None for a flat ``[auth]``, else the first
    ``[auth.<name>]`` section."""
    named = [key for key, value in auth.items() if isinstance(value, dict)]
    return None if "client_id" in auth or not named else named[0]


def account() -> None:
    """Served with sign-in: who is signed in, and a button to sign out (in the sidebar). app.py
    calls it after ``st.navigation``, where sidebar widgets keep one id across runs."""
    if not serving() or _auth() is None or not st.user.get("is_logged_in", False):
        return
    with st.sidebar:
        who = st.user.get("name") or st.user.get("email") or "signed in"
        st.caption(f"Signed in: {who}")
        st.button("Sign out", key="served_logout", on_click=st.logout)


def gate() -> bool:
    """Served mode's checks, run by app.py before anything else: True when the page may render.
    Not served: True at once. Served: hides tracebacks and server paths, refuses unsafe server
    settings, and asks for sign-in when an OIDC provider is configured."""
    try:
        if not serving():
            return True
    except ConfigurationError as exc:  # PRUNEKIT_SERVE=maybe: neither served nor safe to show
        st.error(str(exc))
        return False
    st.set_option("client.showErrorDetails", "none")
    st.set_option("client.toolbarMode", "viewer")
    errors.set_message_filter(redact)
    problems = _settings_problems()
    if problems:
        st.error("This app is not safe to serve: " + "; ".join(problems) + ".")
        return False
    auth = _auth()
    if auth is None:  # no sign-in configured: README says keep it on localhost or behind a proxy
        return True
    if st.user.get("is_logged_in", False):
        return True
    st.title("prunekit")
    st.write("Sign in to use this app.")
    if st.button("Sign in", key="served_login", type="primary"):
        if importlib.util.find_spec("authlib") is None:
            st.error(
                "Sign-in is configured in .streamlit/secrets.toml, but Authlib is not installed on "
                "this server: install it with `pip install 'Authlib>=1.3.2'`."
            )
        else:
            st.login(_provider(auth))
    return False
