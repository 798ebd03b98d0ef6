"""The robot API that submitted code imports: arm, base, gripper, sensors."""
