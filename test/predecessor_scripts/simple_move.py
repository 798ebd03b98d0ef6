# A simple move, written as the predecessor's docs showed it.
from robot_sdk import arm, sensors

print("Current joints:", [round(q, 3) for q in sensors.get_arm_joints()])
arm.go_home()
x, y, z = sensors.get_ee_position()
arm.move_to_pose(x=x + 0.05, y=y, z=z)
arm.move_delta(dz=0.05)
x2, y2, z2 = sensors.get_ee_position()
print(f"Moved to x={x2:.3f} z={z2:.3f}")
