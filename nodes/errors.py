"""Payload errors re-raised with the node and input the user has to fix."""

from __future__ import annotations

from contextlib import contextmanager

from ..janus_core.errors import PayloadError


class JanusInputError(PayloadError):
    """A node input holds a value that does not fit; the message names the node and the input."""


def input_error(node: str, name: str, message: str) -> JanusInputError:
    return JanusInputError(f"{node}, input '{name}': {message}")


@contextmanager
def for_input(node: str, name: str):
    """Turn a janus_core PayloadError raised inside the block into one that names `node` / `name`."""
    try:
        yield
    except JanusInputError:
        raise
    except PayloadError as exc:
        raise input_error(node, name, str(exc)) from exc
