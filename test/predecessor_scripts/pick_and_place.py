# Pick and place, written as the predecessor's docs showed it.
from robot_sdk import arm, base, gripper, sensors

gripper.activate()
gripper.open()
arm.go_home()
arm.move_delta(dz=-0.10)
holding = gripper.grasp()
print("Holding object:", holding)
arm.move_delta(dz=0.10)
base.forward(0.2)
arm.move_delta(dz=-0.10)
gripper.open()
arm.go_home()
print("Base pose:", [round(v, 2) for v in sensors.get_base_pose()])
print("Done")
