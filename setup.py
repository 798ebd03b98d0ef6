"""ament_python package tidybot_exec (also pip-installable into a venv of ROS 2 wheels)."""
from glob import glob

from setuptools import setup

PACKAGE = "tidybot_exec"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE, *(f"{PACKAGE}.{sub}" for sub in (
        "execution", "sandbox", "guard", "cameras", "ros", "clients", "clients.mcp", "sim",
        "base_bridge")),
        "tidybot_sdk", "tidybot_skills", "robot_sdk"],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/urdf", glob("urdf/*.urdf")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="tidybot_exec developers",
    maintainer_email="tidybot-exec@example.com",
    description="Run Python code on the TidyBot through a ROS 2 action, safely.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            f"tidybot-exec = {PACKAGE}.ros.node:main",
            f"tidybot-sim = {PACKAGE}.sim.cli:main",
            f"tidybot-run = {PACKAGE}.clients.run_cli:main",
            f"tidybot-mcp = {PACKAGE}.clients.mcp.server:main",
            f"tidybot-base-bridge = {PACKAGE}.base_bridge.cli:main",
        ],
    },
)
