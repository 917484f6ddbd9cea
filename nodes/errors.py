"""janus_core errors re-raised with the node and input the user has to fix."""

from __future__ import annotations

from contextlib import contextmanager

from ..janus_core.errors import GenerationCancelled, JanusError, PayloadError

# janus_core names inputs by their API names; where a node's widget is called differently, map it here
_LIBRARY_NAMES = {"keep_mask": "mask", "images": "image", "tokens": "tokens"}


class JanusInputError(PayloadError):
    """A node input holds a value that does not fit; the message names the node and the input."""


def input_error(node: str, name: str, message: str) -> JanusInputError:
    return JanusInputError(f"{node}, input '{name}': {message}", input=name)


@contextmanager
def for_input(node: str, name: str | None = None):
    """Turn a janus_core error raised inside the block into one that names `node` and the input: the one the
    error names itself (a setting), else `name`."""
    try:
        yield
    except (JanusInputError, GenerationCancelled):
        raise
    except JanusError as exc:
        which = _LIBRARY_NAMES.get(exc.input, exc.input) if exc.input else name
        if which is None:
            raise JanusInputError(f"{node}: {exc}") from exc
        raise input_error(node, which, str(exc)) from exc
