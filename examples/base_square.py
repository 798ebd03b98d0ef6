"""Base square: drive a 0.5 m square backing up, turning 90 degrees at each corner.

Backwards, because the default world's table stands in front of the robot: a square driven
forward would put the base (whose sides nothing checks: docs/world.md) into it.
"""
from tidybot_sdk import base, sensors

start = sensors.get_base_pose()
for side in range(4):
    base.forward(-0.5)
    base.rotate_degrees(-90)
    x, y, theta = sensors.get_base_pose()
    print(f"corner {side + 1}: x={x:.2f} y={y:.2f} theta={theta:.2f}")
x, y, _ = sensors.get_base_pose()
print(f"back within {((x - start[0]) ** 2 + (y - start[1]) ** 2) ** 0.5 * 100:.1f} cm of the start")
