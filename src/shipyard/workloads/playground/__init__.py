"""The playground workload: a chat UI (Gradio, or Streamlit with `--ui streamlit`) for any OpenAI-compatible server.

`python -m shipyard.workloads.playground` — see __main__.py for flags and env. Nothing is imported here, so
`--help` and `--ui streamlit` never pay for importing Gradio.
"""
