"""The clients' parts that need no node: tidybot-run's live output, and TidybotClient made
and destroyed on a node that spins."""
from __future__ import annotations

from tidybot_exec.clients.client import TidybotClient


def test_client_made_and_destroyed_while_its_node_spins_leaves_the_executor_running():
    """rclpy's executor dies when an action client is made (Kilted) or destroyed
    (ros2/rclpy#1385) while it gathers its wait set; TidybotClient does both between two
    of its waits."""
    from conftest import RosClient

    own = RosClient("destroy_while_spinning")
    busy = own.node.create_timer(0.0005, lambda: None)     # the executor gathers all the time
    entities = lambda: [len(list(e)) for e in (  # noqa: E731
        own.node.waitables, own.node.clients, own.node.subscriptions)]
    before = entities()
    try:
        for _ in range(200):
            TidybotClient(own.node).destroy()
            assert own._thread.is_alive(), "the executor died"
        assert entities() == before
    finally:
        own.node.destroy_timer(busy)
        own.close()


def test_live_output_is_completed_from_the_result(capsys):
    """Feedback (a topic) and the result (a service reply) race, and feedback can be lost:
    what did not arrive live is printed from the result."""
    from tidybot_interfaces.action import ExecuteCode

    from tidybot_exec.clients.run_cli import LiveOutput

    class Arrived:                   # what a handle hands out: the feedback that came
        def __init__(self, messages, lost=0):
            self.messages, self.lost_feedback = messages, lost

        def feedback(self):
            messages, self.messages = self.messages, []
            return messages

    live = LiveOutput(to_stderr_only=False)
    handle = Arrived([ExecuteCode.Feedback(stream="stdout", text="one\n")])
    live.pump(handle)
    live.finish(handle, ExecuteCode.Result(stdout="one\ntwo\n", stderr="err\n"))
    out, err = capsys.readouterr()
    assert (out, err) == ("one\ntwo\n", "err\n")
    live = LiveOutput(to_stderr_only=False)       # truncated: only what arrived live
    live.finish(Arrived([]), ExecuteCode.Result(stdout="head...tail", truncated=True))
    assert capsys.readouterr() == ("", "")
    live = LiveOutput(to_stderr_only=False)       # a gap in the feedback: all of it again
    handle = Arrived([ExecuteCode.Feedback(stream="stdout", text="two\n")], lost=1)
    live.pump(handle)
    live.finish(handle, ExecuteCode.Result(stdout="one\ntwo\n"))
    out, err = capsys.readouterr()
    assert out == "two\none\ntwo\n" and "1 feedback messages were lost" in err
