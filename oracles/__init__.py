"""Independent yardsticks shared by tests/ and benchmarks/ (benchmarks never import from tests/).

Not part of the installed package: ggtool never uses these at run time.
    llamacpp.py   libggml's own quantizer, llama.cpp's logits of a GGUF
    weights.py    making real (grid-bound) weights continuous, imatrices, weighted error
"""
