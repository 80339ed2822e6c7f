"""The Streamlit playground: the same controls as the Gradio one, for teams that prefer Streamlit.

Run by `python -m shipyard.workloads.playground --ui streamlit` (which hands the settings over by env), or
directly with `streamlit run` and the same env. Streamlit reruns this script top to bottom on every
interaction, so the conversation and the models list live in `st.session_state`.
"""

from __future__ import annotations

import streamlit as st

# Absolute import: Streamlit runs this file as a script, not as part of its package.
from shipyard.workloads.playground.client import (ERROR_PREFIX, PlaygroundError, Sampling, Settings,
                                                  build_messages, list_models, stream_chat)

st.set_page_config(page_title="Shipyard playground", layout="wide")


def _load_models(settings: Settings, force: bool = False) -> None:
    """Fetch the models list once per session (and on Refresh), never on every rerun."""
    if force or "models" not in st.session_state:
        try:
            st.session_state.models, st.session_state.models_error = list_models(settings), None
        except PlaygroundError as exc:
            st.session_state.models, st.session_state.models_error = [], str(exc)


try:
    settings = Settings.from_env()  # cheap, and the openai client behind it is cached per settings
except PlaygroundError as exc:  # a malformed base URL in env: say so on the page instead of a traceback
    st.error(str(exc))
    st.stop()
messages: list[dict] = st.session_state.setdefault("messages", [])

with st.sidebar:
    st.subheader("Shipyard playground")
    st.caption(f"Server: `{settings.base_url}`")
    refresh = st.button("Refresh models")
    _load_models(settings, force=refresh)
    models: list[str] = st.session_state.models
    if st.session_state.models_error:
        st.error(st.session_state.models_error)
    if models:
        preferred = settings.model if settings.model in models else models[0]
        model = st.selectbox("Model", models, index=models.index(preferred))
    else:  # nothing listed: a typed name still lets the user try
        model = st.text_input("Model", value=settings.model or "")
    system_prompt = st.text_area("System prompt", placeholder="You are a helpful assistant.")
    temperature = st.slider("Temperature", 0.0, 2.0, 0.7, 0.05)
    top_p = st.slider("Top p", 0.01, 1.0, 1.0, 0.01)  # servers reject top_p = 0
    max_tokens = st.number_input("Max tokens", min_value=1, max_value=32768, value=512, step=1)
    seed = st.number_input("Seed (empty: random)", value=None, step=1, placeholder="random")
    stop = st.text_area("Stop sequences (one per line; \\n is a newline)")
    if st.button("Clear chat"):
        messages.clear()

for turn in messages:
    with st.chat_message(turn["role"]):
        if turn.get("error"):
            st.error(turn["content"].removeprefix(ERROR_PREFIX))
        else:
            st.markdown(turn["content"])

if prompt := st.chat_input("Message"):
    with st.chat_message("user"):
        st.markdown(prompt)
    request = build_messages(system_prompt, messages, prompt)  # history before this prompt is appended
    messages.append({"role": "user", "content": prompt})
    with st.chat_message("assistant"):
        try:
            sampling = Sampling.from_ui(temperature, top_p, max_tokens, seed, stop)
            reply = st.write_stream(stream_chat(settings, model, request, sampling))
            messages.append({"role": "assistant", "content": reply if isinstance(reply, str) else str(reply)})
        except PlaygroundError as exc:
            st.error(str(exc))
            # Kept in the history (so the conversation shows what happened) but never sent back to the model.
            messages.append({"role": "assistant", "content": f"{ERROR_PREFIX}{exc}", "error": True})
