"""QoS profiles shared by the node and its clients, and why each is what it is."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Status topics: a late subscriber gets the current state at once.
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)

# Services, on both ends: KEEP_ALL, so a burst is queued, never dropped. With a depth, the
# server's request reader drops requests beyond it, and with Fast DDS every client's
# response reader receives the replies to *all* clients of the service and discards the
# others' only when it takes them, so a burst beyond the depth loses replies silently
# (measured with depth 100: one client sending 200 acquires at once got 104 answers).
# Clients that expect bursts should use this profile too; TidybotClient does.
SERVICES = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
