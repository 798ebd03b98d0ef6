"""tidybot-mcp: the robot as a Model Context Protocol server for LLM clients (docs/mcp.md).

server (the command, its transports), tools (the eleven tools), jobs (what a call starts and
later calls follow), lease (the server's own lease), robot (the node's topics on demand),
models (what the tools return) and text (the words beside it). A client of the node like any
other: it reaches the robot only through TidybotClient (.importlinter checks it).
"""
