"""`ggtool serve MODEL`: an OpenAI-compatible HTTP server (llama-cpp-python's server extra).

The model is loaded once by ggtool (same placement, context and draft rules as `chat`), and the
server's chat completions go through ggtool's template handling: the GGUF's own template (or
--template), bounded rendering, and the conversation trimmed to the context window with a notice
in the server log: the oldest turns go first, the system prompt and the newest message stay.
Bound to 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

from ..errors import DependencyError
from .engine import Engine
from .session import answer_reserve
from .templates import ChatTemplate

SERVE_HINT = "install the server extra: pip install 'ggtool[serve]' (in this checkout: .venv/bin/pip install -e '.[serve]')"


def _server_modules():
    try:
        import uvicorn
        from llama_cpp.server import app as app_module
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as e:
        raise DependencyError(f"`ggtool serve` needs llama-cpp-python's server packages ({e})",
                              hint=SERVE_HINT) from None
    return uvicorn, app_module, ModelSettings, ServerSettings


class TrimmingFormatter:
    """A llama-cpp-python ChatFormatter: our bounded template, the conversation trimmed to fit."""

    def __init__(self, engine: Engine, template: ChatTemplate, log):
        self.engine, self.template, self.log = engine, template, log

    def __call__(self, *, messages, functions=None, function_call=None, tools=None, tool_choice=None, **kwargs):
        from llama_cpp.llama_chat_format import ChatFormatterResponse

        extra = {k: v for k, v in dict(functions=functions, function_call=function_call, tools=tools,
                                       tool_choice=tool_choice, **kwargs).items() if v is not None}
        messages = [dict(m) for m in messages]
        n_ctx = self.engine.n_ctx
        reserve = answer_reserve(n_ctx, None)
        head = [m for m in messages[:1] if m.get("role") in ("system", "developer")]
        turns = messages[len(head):]
        dropped = 0
        while True:
            prompt = self.template.render(head + turns, **extra)
            n = len(self.engine.tokenize_chat(prompt))
            if n + reserve <= n_ctx or len(turns) <= 1:
                break   # too long even so: llama-cpp-python answers with a clear 400 error
            cut = 1
            while cut < len(turns) - 1 and turns[cut].get("role") != "user":
                cut += 1
            turns, dropped = turns[cut:], dropped + cut
        if dropped:
            self.log(f"[context: dropped the oldest {dropped} messages of a request to stay within the "
                     f"{n_ctx}-token context; the system prompt and the newest message are kept]")
        stop = [s for s in [self.template.eos_token] + self.template.stop if s]
        return ChatFormatterResponse(prompt=prompt, stop=stop, added_special=True)


def build_app(engine: Engine, template: ChatTemplate, alias: str, log, api_key: str | None = None,
              host: str = "127.0.0.1", port: int = 8080):
    """The FastAPI app serving `engine`'s already loaded model."""
    _, app_module, ModelSettings, ServerSettings = _server_modules()
    from llama_cpp.llama_chat_format import chat_formatter_to_chat_completion_handler

    engine.llm.chat_handler = chat_formatter_to_chat_completion_handler(TrimmingFormatter(engine, template, log))
    settings = ModelSettings(model=str(engine.path), model_alias=alias, n_ctx=engine.n_ctx, verbose=False)
    base = app_module.LlamaProxy

    class OneModel(base):
        """llama-cpp-python's model proxy, holding the model ggtool loaded (not loading its own)."""

        def __init__(self, models):
            self._model_settings_dict = {alias: settings}
            self._current_model = engine.llm
            self._current_model_alias = self._default_model_alias = alias
            self._default_model_settings = settings

        def free(self):
            pass   # ggtool closes the engine

    app_module.LlamaProxy = OneModel      # create_app builds its proxy from this name
    try:
        return app_module.create_app(server_settings=ServerSettings(host=host, port=port, api_key=api_key),
                                     model_settings=[settings])
    finally:
        app_module.LlamaProxy = base


def serve(engine: Engine, template: ChatTemplate, *, host: str, port: int, log, api_key: str | None = None,
          alias: str | None = None) -> None:
    uvicorn = _server_modules()[0]
    alias = alias or engine.path.stem
    app = build_app(engine, template, alias, log, api_key=api_key, host=host, port=port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log(f"warning: listening on {host}: other machines can reach this server"
            + ("" if api_key else "; --api-key KEY to require a key"))
    log(f"serving {alias} on http://{host}:{port}/v1 (OpenAI-compatible: /v1/chat/completions, "
        "/v1/completions, /v1/models); Ctrl-C stops")
    uvicorn.run(app, host=host, port=port, log_level="warning")
