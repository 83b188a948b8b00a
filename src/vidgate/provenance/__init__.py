"""C2PA provenance: the signing pair (keys), a development CA (devca), signing (sign) and
verification (verify). See docs/provenance.md."""
