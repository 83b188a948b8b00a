"""Provider adapters: one module per wire protocol, discovered by :mod:`vidgate.providers.base`."""
