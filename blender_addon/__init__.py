"""Howard for Blender: pull an alpha matte from a plate and a clean plate in the compositor.

Installs two ways from the zip `python3 build.py dist` writes (dist/howard_blender_addon.zip):
as an extension (Blender 4.2+, blender_manifest.toml) or as a legacy add-on (bl_info). The
panel is in the Compositor's sidebar (N), tab "Howard". See README.md.
"""

bl_info = {
    "name": "Howard Matte",
    "author": "Howard",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "Compositor > Sidebar (N) > Howard",
    "description": "Alpha matte of a person from a plate and a clean plate (BGMv2), no green screen",
    "category": "Compositing",
}


def register():
    from . import ui

    ui.register()


def unregister():
    from . import ui

    ui.unregister()
