"""ComfyUI entry point of the Janus / Janus-Pro node pack (see docs/NODES.md)."""

if __package__:  # imported by the editor as custom_nodes/<folder>/__init__.py
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # imported as a lone file (pytest collecting the repository root as a package): nothing to register
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = "./web/js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
