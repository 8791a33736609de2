"""arqon mcp's machinery: the bus connection (bus.py), the agent's Zgent (zgent.py), the read
cursor (cursor.py), what each tool does (agent.py), the tools' texts (tools.py) and the MCP
server (server.py). It needs the optional MCP SDK (arqond[mcp]); arqond/cli/mcp.py imports it
only when the command runs."""
