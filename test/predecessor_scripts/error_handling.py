# Error handling, written as the predecessor's docs showed it.
from robot_sdk import arm, gripper
from robot_sdk.arm import ArmError
from robot_sdk.gripper import GripperError

try:
    arm.move_joints([0.0, 0.0, 0.0])
except ArmError as e:
    print("Caught ArmError:", e)

try:
    gripper.move()
except GripperError as e:
    print("Caught GripperError:", e)

try:
    arm.move_to_pose(z=-1.0)
except Exception as e:
    print(f"Caught {type(e).__name__}:", e)
print("Recovered")
