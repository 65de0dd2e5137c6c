"""Byte-level formats of the client APIs; no I/O.

Searches of bytes on the request path are written `data.find(x) >= 0`, not `x in data`:
CPython 3.11's `bytes.__contains__` first tries `x` as an integer, and for bytes that
means formatting, raising and clearing a TypeError (about 1,900 instructions, where the
search itself takes a few hundred). A streamed request made 17 such tests, 4% of the
router's instructions (bench/instructions.py --keep, callgrind_annotate).
"""
