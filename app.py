"""prunekit app entry point: `streamlit run app.py`."""

import streamlit as st

from prunekit.ui import served, sidebar

st.set_page_config(page_title="prunekit", layout="wide")
if not served.gate():  # served to others (PRUNEKIT_SERVE=1): safe settings, then sign-in
    st.stop()
page = st.navigation(
    [
        st.Page("pages/overview.py", title="Overview", default=True),
        st.Page("pages/importance.py", title="Head importance"),
        st.Page("pages/compare.py", title="Compare scorers"),
        st.Page("pages/prune.py", title="Prune"),
        st.Page("pages/listen.py", title="Listen"),
        st.Page("pages/tokens.py", title="Tokens"),
        st.Page("pages/keys.py", title="Key priors"),
        st.Page("pages/experiments.py", title="Experiments"),
    ]
)
# The sidebar's widgets come after st.navigation: before it, the first run of a session gives them
# other ids than every later run (Streamlit mixes the active page into a widget's id), so the
# first click on any of them after the page loaded was dropped.
served.account()
sidebar()
page.run()
