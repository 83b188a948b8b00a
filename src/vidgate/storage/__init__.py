"""Our own copy of every output: streamed, checksummed, measured."""
