"""Talking to a model: chat templates, the chat session, the terminal REPL, one-shot `run`,
hardware detection and GPU layer choice, speculative decoding and the OpenAI-compatible server.

    templates.py  the GGUF's own chat template (or one the user names), rendered bounded
    hardware.py   what llama.cpp can use here; context size and GPU layers that fit
    engine.py     a loaded model + one token-streaming loop shared by chat, run and the benchmarks
    draft.py      speculative decoding: a small draft model, or prompt lookup
    session.py    a conversation kept inside the context window; /save and /load
    repl.py       the terminal program (`ggtool chat`)
    server.py     `ggtool serve` (llama-cpp-python's server, our template and context rules)
"""
