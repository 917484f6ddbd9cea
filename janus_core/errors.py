"""Exceptions raised by janus_core. Each message says what is wrong and what to do about it."""


class JanusError(Exception):
    """Base class of every error this library raises on purpose."""


class CheckpointError(JanusError):
    """A checkpoint folder or weight file is missing, incomplete, of an unknown layout or malformed."""


class PayloadError(JanusError):
    """A value handed between stages (cond, tokens, image) does not fit the stage that received it."""


class GenerationCancelled(JanusError):
    """Raised by the sampler when its cancel check returns True. The KV cache is freed before it propagates."""


class DownloadError(JanusError):
    """A known repo id could not be fetched (offline, hub error); the message says which files to put where."""
