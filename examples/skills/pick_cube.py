"""A skill (docs/skills.md): save it with a proof, then import it by name.

    tidybot-run --save-skill pick_cube examples/skills/pick_cube.py --dry-runs 3
    tidybot-run -c "from tidybot_skills import pick_cube; print(pick_cube())"
"""
from tidybot_sdk import arm, gripper


def pick_cube(x: float = 0.5, y: float = 0.0, top: float = 0.10) -> bool:
    """Pick up the cube whose top face is at (x, y, top) in the arm base frame (m), from
    above, and lift it 15 cm; True when the fingers hold it."""
    gripper.activate()
    gripper.open()
    arm.move_to_pose(x=x, y=y, z=top + 0.10)     # above it, fingers pointing down
    arm.move_to_pose(x=x, y=y, z=top - 0.02)     # the pads around its upper half
    held = gripper.grasp(force=80)
    arm.move_delta(dz=0.15)
    return held


if __name__ == "__main__":
    held = pick_cube()
    print("held:", held)
    if not held:
        raise SystemExit("the fingers closed on nothing")
