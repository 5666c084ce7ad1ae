# Howard for Nuke: adds Nodes > Howard. Put this folder on NUKE_PATH (see README.md).
import nuke

_howard = nuke.menu("Nodes").addMenu("Howard")
_howard.addCommand("HowardMatte", "import howard_nuke; howard_nuke.create_node()")
_howard.addCommand("Export TorchScript for Inference...", "import howard_nuke; howard_nuke.export_torchscript()")
