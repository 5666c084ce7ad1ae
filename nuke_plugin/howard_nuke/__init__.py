"""Howard for Nuke: the HowardMatte node and the TorchScript export command.

Only `node` imports nuke; `logic` and `howard_hostboot` are plain Python.
"""


def create_node():
    from .node import create_node

    return create_node()


def pull_matte(node):
    from .node import pull_matte

    return pull_matte(node)


def export_torchscript(node=None):
    from .node import export_torchscript

    return export_torchscript(node)


def restore(node):
    from .node import restore

    return restore(node)
