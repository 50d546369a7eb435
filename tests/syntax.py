"""ast.parse for the tests that read our own source."""

from __future__ import annotations

import ast
import gc


def parse(text: str) -> ast.Module:
    """`ast.parse`, with no garbage collection inside it. CPython 3.11 checks the thread's
    recursion depth before and after turning the tree into objects; a collection in between
    that finalizes a greenlet (Playwright's, or a host's from the SSH loop) switches stacks and
    the count no longer matches: "SystemError: AST constructor recursion depth mismatch"."""
    gc.collect()
    gc.disable()
    try:
        return ast.parse(text)
    finally:
        gc.enable()
