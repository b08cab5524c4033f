"""The app starts and its pages render (Streamlit AppTest, headless)."""

import ast
from pathlib import Path

from streamlit.testing.v1 import AppTest

from conftest import REPO

HEAVY = {"torch", "transformers", "peft", "torchaudio"}


def test_overview_renders_the_demo_model():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layers"] == "6" and metrics["Heads per layer"] == "6"
    assert at.sidebar.text_input(key="model_source").value == "demo"


def test_bad_model_source_is_a_message_not_a_crash():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    at.sidebar.text_input(key="model_source").set_value("./no/such/model").run()
    assert not at.exception
    assert any("No model folder" in e.value for e in at.error)


def test_ui_files_do_not_import_ml_libraries():
    for path in [REPO / "app.py", *sorted((REPO / "pages").glob("*.py"))]:
        tree = ast.parse(Path(path).read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & HEAVY, f"{path.name} imports {names}"
