"""Error handling: every SDK error says what went wrong and what to do."""
from tidybot_sdk import ArmError, GripperError, SafetyError, TidybotError, arm, gripper

try:
    arm.move_to_pose(z=-0.5)                      # below the table: refused before moving
except SafetyError as e:
    print("refused:", e)

try:
    arm.move_joints([0.0, 0.0, 0.0])              # wrong number of joints
except ArmError as e:
    print("arm error:", e)

try:
    gripper.move(width=0.04)                      # widths need a calibrated gripper
except GripperError as e:
    print("gripper error:", e)

try:
    arm.go_home()
    print("the robot is fine after all that")
except TidybotError as e:                         # the base class catches every SDK error
    print("unexpected:", e)
    raise
