"""Clients of the node over ROS: TidybotClient, tidybot-run (with its skill commands) and
tidybot-mcp (the mcp_* modules)."""
