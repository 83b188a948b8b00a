from vidgate.cli.main import entrypoint

entrypoint()
