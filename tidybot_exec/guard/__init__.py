"""The safety guard on the trusted side: the envelope (pure limits), the relay (the code's
only way to the robot) and the hold (stop and hold every backend)."""
