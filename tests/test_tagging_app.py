"""The embedded tagging demo in the app (AppTest): Overview shows its mAP on the tagging set."""

import pytest
from conftest import REPO
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.slow  # generates the tagging set once (about 100 s) when the cache lacks it


def test_the_tagging_demo_on_the_overview(real_cache):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    at.session_state["model_kind"] = "Embedded tagging demo"
    at.session_state["data_kind"] = "Synthetic tagging set"
    at.run()
    assert not at.exception, at.exception
    assert "Model: demo-tagging" in [s.value for s in at.subheader]
    maps = [m for m in at.metric if m.label.startswith("mAP on the test split")]
    assert len(maps) == 1 and 0.5 < float(maps[0].value) <= 1, [m.label for m in at.metric]
    assert not at.error, [e.value for e in at.error]
