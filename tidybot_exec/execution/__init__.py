"""The in-node core (no rclpy): the execution service and everything it owns — supervision,
launching, the warm pool, leases, history, validation, output, dry runs."""
