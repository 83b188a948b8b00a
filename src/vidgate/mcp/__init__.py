"""The MCP server over the gateway facade: vidgate's tools for agents (``vidgate mcp``)."""
