"""The app starts and its pages render (Streamlit AppTest, headless)."""

import ast
from pathlib import Path

import pytest
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


def _importance_page(**state) -> AppTest:
    """The page as app.py's navigation shows it. AppTest.switch_page runs the page file alone
    (without app.py's sidebar), so sidebar choices are given as the session state they set."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    for key, value in state.items():  # before the first run, so the sidebar widgets take them
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/importance.py").run()
    assert not at.exception, at.exception
    return at


def test_head_importance_page_magnitude():
    at = _importance_page()
    assert at.selectbox(key="imp_scorer").value == "magnitude"
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # the head map and the channels of the selected head
    at.selectbox(key="imp_view").set_value("W_q").run()
    at.selectbox(key="imp_layer").set_value(3).run()
    at.selectbox(key="imp_head").set_value(2).run()
    assert not at.exception, at.exception
    channels = at.get("plotly_chart")[1].proto.spec
    assert "Layer 3, head 2" in channels and "W_q" in at.get("plotly_chart")[0].proto.spec
    assert len(at.get("download_button")) == 1
    assert not at.error


@pytest.mark.slow
def test_head_importance_page_fisher_uses_the_demo_data(real_cache):
    at = _importance_page(score_clips=64)
    at.selectbox(key="imp_scorer").set_value("fisher").run()
    assert not at.exception, at.exception
    assert not at.error
    assert "fisher score per head" in at.get("plotly_chart")[0].proto.spec


def test_bad_dataset_is_a_message_on_the_importance_page(tmp_path):
    at = _importance_page(data_source=str(tmp_path / "missing"))
    at.selectbox(key="imp_scorer").set_value("fisher").run()
    assert not at.exception, at.exception
    assert any("Could not score with fisher" in e.value for e in at.error)
