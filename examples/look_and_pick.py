"""Look, then pick: find the red cube in the base camera's colour and depth, locate it in
the arm's frame from the intrinsics and the camera's pose, and pick it up."""
import numpy as np

from tidybot_sdk import arm, gripper, sensors

print("cameras:", ", ".join(sensors.list_cameras()))
rgb = sensors.get_image("base")
depth = sensors.get_depth("base")            # metres, nan where there is no reading
info = sensors.get_camera_info("base")

# the cube: strongly red pixels with a depth reading
r, g, b = (rgb[..., i].astype(int) for i in range(3))
mask = (r > 120) & (r > 2 * g) & (r > 2 * b) & np.isfinite(depth)
if mask.sum() < 10:
    raise SystemExit("no red cube in view of the base camera")
v, u = np.nonzero(mask)
z = depth[v, u]
# back-project each pixel into the optical frame, then into the arm's base frame
points = np.stack([(u - info["cx"]) * z / info["fx"], (v - info["cy"]) * z / info["fy"], z,
                   np.ones_like(z)])
in_base = (info["T_base_camera"] @ points)[:3]
top = in_base[2].max()                       # the cube's top face is its highest points
x, y = in_base[:2, in_base[2] > top - 0.01].mean(axis=1)
print(f"cube seen at x={x:.3f} y={y:.3f}, top at z={top:.3f} (arm base frame, {mask.sum()} px)")

gripper.activate()
gripper.open()
arm.move_to_pose(x=x, y=y, z=top + 0.10)     # above it, fingers pointing down
arm.move_to_pose(x=x, y=y, z=top - 0.02)     # the pads around its upper half
if not gripper.grasp(force=80):
    raise SystemExit("the fingers closed on nothing")
print(f"grasped: {sensors.get_gripper_position()}/255, holding={sensors.is_gripper_holding()}")
arm.move_delta(dz=0.15)
print(f"lifted to z={sensors.get_ee_position()[2]:.3f}; still holding: "
      f"{sensors.is_gripper_holding()}")
