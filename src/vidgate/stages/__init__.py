"""Post-generation stages: what runs on a stored clip before it is delivered (checks,
signing, and later work), one module per stage, found by :mod:`vidgate.stages.base`."""
