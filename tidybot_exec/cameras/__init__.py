"""Cameras: the camera-server protocol, the robot's camera mounts, and the node's camera
sources (no rclpy: the node and the simulator share this)."""
