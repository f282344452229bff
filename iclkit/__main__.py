from iclkit.cli import entry

entry()
