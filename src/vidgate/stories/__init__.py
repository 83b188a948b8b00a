"""Stories: from a story file to a finished multi-shot film (plan, chain, assemble, sound)."""
