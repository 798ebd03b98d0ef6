"""The ROS shell: the node, core <-> message conversion, state topics, QoS, parameters and
the launch plan."""
