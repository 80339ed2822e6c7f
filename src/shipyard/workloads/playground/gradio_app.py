"""The Gradio playground: a chat UI plus named API endpoints for scripts.

Endpoints (`gradio_client.Client(url).predict(..., api_name=...)`):

- `/chat` (message, history, model, temperature, top_p, max_tokens, seed, system_prompt, stop) -> the whole
  reply. Stateless: history is passed in (OpenAI-style {"role", "content"} dicts or [user, assistant] pairs).
  Failures raise, so gradio_client raises `AppError` with the message: a script must never mistake an error
  for a reply.
- `/models` () -> the model ids the server lists.
- `/chat_ui` (undocumented): the chat box's own endpoint (message, model, system_prompt, temperature, top_p,
  max_tokens, seed, stop), history kept per session. Failures come back as a chat message, as in the UI.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from .client import (ERROR_PREFIX, PlaygroundError, Sampling, Settings, build_messages, complete_chat,
                     list_models, stream_chat)

# Gradio runs one call per event at a time by default, which would queue a whole team behind one slow reply.
# The model server batches concurrent requests, so let several through.
CONCURRENCY = 16


def error_message(exc: PlaygroundError, partial: str = "") -> str:
    """An error as the assistant's turn; what streamed before the failure stays visible above it."""
    return f"{partial}\n\n{ERROR_PREFIX}{exc}" if partial else f"{ERROR_PREFIX}{exc}"


def make_handlers(settings: Settings) -> dict[str, Any]:
    """The app's functions, apart from the UI so tests can call them in-process."""

    def refresh_models(current: str | None) -> tuple[Any, str]:
        try:
            models = list_models(settings)
        except PlaygroundError as exc:
            # Keep whatever is typed/selected: the dropdown accepts custom values, so chat still works.
            return gr.Dropdown(value=current, allow_custom_value=True), f"{ERROR_PREFIX}{exc}"
        preferred = [m for m in (current, settings.model) if m]
        value = next((m for m in preferred if m in models), models[0] if models else current)
        note = f"{len(models)} model(s) at `{settings.base_url}`" if models else (
            f"{ERROR_PREFIX}the server at `{settings.base_url}` lists no models")
        return gr.Dropdown(choices=models, value=value, allow_custom_value=True), note

    def respond(message: str, history: list[dict], model: str | None, system_prompt: str, temperature: float,
                top_p: float, max_tokens: float, seed: float | None, stop: str) -> Iterator[str]:
        """ChatInterface's function: yields the reply so far (Gradio wants the whole text each time)."""
        text = ""
        try:
            sampling = Sampling.from_ui(temperature, top_p, max_tokens, seed, stop)
            for delta in stream_chat(settings, model, build_messages(system_prompt, history, message), sampling):
                text += delta
                yield text
        except PlaygroundError as exc:
            yield error_message(exc, text)
            return
        if not text:  # an empty reply still ends the turn (a generator that yields nothing shows as None)
            yield ""

    def chat(message: str, history: list | None = None, model: str = "", temperature: float = 0.7,
             top_p: float = 1.0, max_tokens: int = 512, seed: int | None = None, system_prompt: str = "",
             stop: list[str] | None = None) -> str:
        """Send one message (after an optional history) and return the whole reply. An empty model means
        the playground's configured model, else the server's first."""
        try:
            sampling = Sampling.from_ui(temperature, top_p, max_tokens, seed, stop)
            return complete_chat(settings, model, build_messages(system_prompt, history, message), sampling)
        except PlaygroundError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    def models() -> list[str]:
        """The model ids the server lists."""
        try:
            return list_models(settings)
        except PlaygroundError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    return {"refresh_models": refresh_models, "respond": respond, "chat": chat, "models": models}


def build_app(settings: Settings) -> gr.Blocks:
    h = make_handlers(settings)
    with gr.Blocks(title="Shipyard playground") as demo:
        with gr.Sidebar(open=True):
            gr.Markdown(f"### Shipyard playground\nServer: `{settings.base_url}`")
            # allow_custom_value: a server whose /models fails or lags can still be used by typing a name.
            model = gr.Dropdown(label="Model", choices=[], value=settings.model, allow_custom_value=True)
            refresh = gr.Button("Refresh models", size="sm")
            status = gr.Markdown()
            system_prompt = gr.Textbox(label="System prompt", lines=3, placeholder="You are a helpful assistant.")
            temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature")
            top_p = gr.Slider(0.01, 1.0, value=1.0, step=0.01, label="Top p")  # servers reject top_p = 0
            max_tokens = gr.Slider(1, 4096, value=512, step=1, label="Max tokens")
            seed = gr.Number(label="Seed (empty: random)", value=None, precision=0)
            stop = gr.Textbox(label="Stop sequences (one per line; \\n is a newline)", lines=2)
        # Rendered above, so ChatInterface uses these components in place instead of its own accordion.
        gr.ChatInterface(h["respond"], additional_inputs=[model, system_prompt, temperature, top_p, max_tokens,
                                                          seed, stop],
                         api_name="chat_ui", api_visibility="undocumented", fill_height=True)
        refresh.click(h["refresh_models"], [model], [model, status], api_visibility="undocumented")
        demo.load(h["refresh_models"], [model], [model, status], api_visibility="undocumented")
        gr.api(h["chat"], api_name="chat")
        gr.api(h["models"], api_name="models")
    return demo.queue(default_concurrency_limit=CONCURRENCY)


def launch(settings: Settings, host: str, port: int, root_path: str | None) -> None:
    """Serve until interrupted (SIGINT, or SIGTERM turned into KeyboardInterrupt by __main__)."""
    build_app(settings).launch(
        server_name=host, server_port=port, root_path=root_path or None, show_error=True,
        ssr_mode=False,  # server-side rendering needs Node.js, which a slim container does not have
        footer_links=["api", "settings"])
