from hookd.cli import entry

entry()
