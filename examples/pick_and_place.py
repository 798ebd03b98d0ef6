"""Pick and place: pick the cube off the table in front of the robot, carry it 30 cm to
the left, put it down. (examples/look_and_pick.py finds it with a camera instead.)"""
from tidybot_sdk import arm, base, gripper, sensors

CUBE = (0.5, 0.0, 0.075)          # where the simulator's cube is, arm base frame (m)

gripper.activate()
gripper.open()
arm.go_home()
print("approaching the cube")
arm.move_to_pose(x=CUBE[0], y=CUBE[1], z=CUBE[2] + 0.12)
arm.move_delta(dz=-0.12)
if gripper.grasp(force=80):
    print("grasped: the fingers stopped on something")
else:
    print("nothing between the fingers; continuing to show the motion")
arm.move_delta(dz=0.15)
print("carrying it 0.3 m to the left")
base.strafe(0.3)
arm.move_delta(dz=-0.15)
gripper.open()
arm.move_delta(dz=0.15)
arm.go_home()
x, y, theta = sensors.get_base_pose()
print(f"placed; base at x={x:.2f} y={y:.2f} theta={theta:.2f}")
