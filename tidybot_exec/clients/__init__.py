"""Clients of the node over ROS: TidybotClient and tidybot-run."""
