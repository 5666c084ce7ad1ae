# Howard for Nuke. Nothing to set up at start-up: the node is added by menu.py, and the
# howard_nuke package is found because this folder is on the plugin path (NUKE_PATH or
# nuke.pluginAddPath). The node runs Howard through the `howard` command: set HOWARD_CLI
# (or HOWARD_PYTHON) in the environment Nuke starts from, or fill the node's
# "howard executable" knob.
