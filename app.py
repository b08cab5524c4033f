"""prunekit app entry point: `streamlit run app.py`."""

import streamlit as st

from prunekit.ui import served, sidebar

st.set_page_config(page_title="prunekit", layout="wide")
if not served.gate():  # served to others (PRUNEKIT_SERVE=1): safe settings, then sign-in
    st.stop()
sidebar()
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
page.run()
