# The predecessor's rewind test: move the base back 0.2 m and the arm, then rewind it all.
from robot_sdk import arm, base, rewind, sensors

base_start = sensors.get_base_pose()
arm_start = sensors.get_arm_joints()
base.move_delta(dx=-0.2)
q = list(arm_start)
q[1] += 0.2
arm.move_joints(q)
info = rewind.get_trajectory_info()
print("Recorded:", info["length"] > 2)
result = rewind.rewind_percentage(100, components=["base", "arm"])
print("Rewound:", result.success, result.steps_rewound > 2, result.components_rewound)
x, y, _ = sensors.get_base_pose()
print("Base back:", abs(x - base_start[0]) < 0.02 and abs(y - base_start[1]) < 0.02)
print("Arm back:", max(abs(a - b) for a, b in zip(sensors.get_arm_joints(), arm_start)) < 0.02)
rewind.clear_trajectory()
print("Cleared:", rewind.get_status()["trajectory_length"])
