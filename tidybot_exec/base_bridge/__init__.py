"""``tidybot-base-bridge``: the real TidyBot base server's multiprocessing RPC, served as the
ZMQ base protocol of docs/protocols.md, so the SDK, guard and node drive the real base as
they drive the simulator's (docs/real-robot.md, "Base bridge").

rpc.py is the bounded RPC client, bridge.py the ZMQ side, cli.py the command. No rclpy.
"""
