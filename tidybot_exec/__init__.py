"""tidybot_exec: run Python code on the TidyBot through a ROS 2 action."""
