"""Exceptions raised by janus_core. Each message says which input is wrong, what is wrong and what to do.

Errors about one named input (a setting, a prompt, an image, a file) carry that name in `.input`, so a
front end (the CLI, a node) can point at the field the user has to fix.
"""


class JanusError(Exception):
    """Base class of every error this library raises on purpose."""

    def __init__(self, message: str = "", input: str | None = None):
        super().__init__(message)
        self.input = input


class CheckpointError(JanusError):
    """A checkpoint folder or weight file is missing, incomplete, of an unknown layout or malformed."""


class PayloadError(JanusError):
    """A value handed between stages (cond, tokens, image) does not fit the stage that received it."""


class SettingError(PayloadError):
    """A setting (cfg, temperature, seed, batch size, device, ...) is of the wrong type, not finite or out of range."""


class ImageError(PayloadError):
    """An image (array or file) cannot be used: unreadable, truncated, too large, or of the wrong layout or range."""


class OutputError(JanusError):
    """An output path cannot be written (not a folder, read-only, full disk) or would overwrite a file."""


class DeviceError(SettingError):
    """The requested device does not exist or is not available on this machine."""


class InsufficientMemoryError(JanusError):
    """A run would not fit in the memory available; refused before anything is allocated."""


class GenerationCancelled(JanusError):
    """Raised by the sampler when its cancel check returns True. The KV cache is freed before it propagates."""


class DownloadError(JanusError):
    """A known repo id could not be fetched (offline, hub error); the message says which files to put where."""


class JanusWarning(UserWarning):
    """A run goes on with a setting adjusted to what fits (e.g. describe's answer length capped to the model's
    context); front ends show it (the CLI on stderr, a node in its status line)."""
