"""Reads the bench's JSON output: files of concatenated JSON values (result objects, {"results": [...]}
documents, or lists of results), as `go run ./bench -json` appends them and the PyTorch baselines write."""
import json
import os


def rows(*paths, required=False):
    """Every result in the files, in file order. A missing file has no results unless required."""
    out = []
    dec = json.JSONDecoder()
    for path in paths:
        if not required and not os.path.exists(path):
            continue
        with open(path) as f:
            txt = f.read()
        i = 0
        while i < len(txt):
            while i < len(txt) and txt[i].isspace():
                i += 1
            if i >= len(txt):
                break
            o, i = dec.raw_decode(txt, i)
            out += o if isinstance(o, list) else o.get("results", [o])
    return out
