"""Simple move: home, a small cartesian offset, back home."""
from tidybot_sdk import arm, sensors

arm.go_home()
x, y, z = sensors.get_ee_position()
print(f"end effector at x={x:.3f} y={y:.3f} z={z:.3f}")
arm.move_to_pose(x=x + 0.10, z=z - 0.05)
x2, y2, z2 = sensors.get_ee_position()
print(f"moved to     x={x2:.3f} y={y2:.3f} z={z2:.3f}")
arm.move_delta(dyaw=0.5)
print("rotated the gripper by 0.5 rad")
arm.go_home()
print("back home")
