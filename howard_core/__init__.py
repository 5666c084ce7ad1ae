"""Howard: background matting from a plate and a clean plate.

The public entry points are imported lazily so that `import howard_core` stays
cheap for host adapters (Nuke, Blender) that only need one of them.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "matte"]


def __getattr__(name):
    if name == "matte":
        from howard_core.pipeline import matte

        return matte
    raise AttributeError(f"module 'howard_core' has no attribute {name!r}")
