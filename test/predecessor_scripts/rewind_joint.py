# The predecessor's rewind test: turn joint 0 by +30 degrees, then rewind to the start.
import math

from robot_sdk import arm, rewind, sensors

start = sensors.get_arm_joints()
q = list(start)
q[0] += math.radians(30)
arm.move_joints(q)
print("Trajectory length:", rewind.get_status()["trajectory_length"] > 0)
result = rewind.reset_to_home()
print("Rewind success:", result.success, result.error)
back = sensors.get_arm_joints()
print("Back at start:", max(abs(a - b) for a, b in zip(back, start)) < 0.02)
