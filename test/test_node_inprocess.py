"""The ROS translation in one test process, in the style of rclpy's test_action_server.py:
the node, an action client and one executor here; no node subprocess (the executions
are still real child processes, and the backends an in-process simulator).

These pin down what node.py adds to the core: goal → Request, each outcome → its action
state and result fields, feedback with gap-free seq, cancel → CANCELED, a refused goal
accepted then aborted with the reason.
"""
from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy")

from action_msgs.msg import GoalStatus  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from tidybot_interfaces.action import ExecuteCode  # noqa: E402

from support import wait_until  # noqa: E402

R = ExecuteCode.Result
NAMESPACE = "inprocess"


@pytest.fixture
def graph(sim, tmp_path):
    """(executor, node, action client, feedback list) on one context of their own."""
    from tidybot_exec.ros.node import TidybotExecNode

    simulator, _ = sim
    c = simulator.config
    params = {"arm_cmd_port": c.arm_ports[0], "arm_state_port": c.arm_ports[1],
              "arm_stream_port": c.arm_ports[2], "gripper_cmd_port": c.gripper_ports[0],
              "gripper_state_port": c.gripper_ports[1], "base_cmd_port": c.base_ports[0],
              "base_state_port": c.base_ports[1], "history_dir": str(tmp_path / "history"),
              "require_lease": False, "warm_worker": False, "allow_unsandboxed": True}
    context = rclpy.Context()
    rclpy.init(context=context)
    node = TidybotExecNode(context=context, namespace=NAMESPACE, parameter_overrides=[
        Parameter(name, value=value) for name, value in params.items()])
    client_node = rclpy.create_node("inprocess_client", namespace=NAMESPACE, context=context)
    client = ActionClient(client_node, ExecuteCode, "execute_code")
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(node)
    executor.add_node(client_node)
    try:
        assert client.wait_for_server(timeout_sec=30)
        yield executor, node, client
    finally:
        node.shutdown()
        executor.shutdown()
        client.destroy()
        client_node.destroy_node()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def send(graph, code: str, **fields):
    """(goal handle, feedback list) once the goal is accepted."""
    executor, _, client = graph
    feedback: list = []
    future = client.send_goal_async(ExecuteCode.Goal(code=code, **fields),
                                    feedback_callback=lambda msg: feedback.append(msg.feedback))
    executor.spin_until_future_complete(future, timeout_sec=30)
    handle = future.result()
    assert handle is not None and handle.accepted
    return handle, feedback


def outcome(graph, handle, feedback=None, expected_feedback: str | None = None):
    """(action status, result), with the feedback caught up when ``expected_feedback``."""
    executor = graph[0]
    future = handle.get_result_async()
    executor.spin_until_future_complete(future, timeout_sec=60)
    response = future.result()
    assert response is not None, "no result"
    if expected_feedback is not None:      # feedback (a topic) may trail the result
        wait_until(lambda: (executor.spin_once(timeout_sec=0.05), "".join(
            f.text for f in feedback if f.stream == "stdout") == expected_feedback)[1], 10,
            "the feedback to catch up")
    return response.status, response.result


def test_a_goal_that_succeeds_is_succeeded_with_its_output_and_gap_free_feedback(graph):
    code = "for i in range(5):\n    print('line', i, flush=True)\n"
    handle, feedback = send(graph, code, label="in process")
    expected = "".join(f"line {i}\n" for i in range(5))
    status, result = outcome(graph, handle, feedback, expected)
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert (result.status, result.exit_code, result.stdout, result.error) == (
        R.STATUS_SUCCEEDED, 0, expected, "")
    assert result.execution_id and result.duration_s > 0
    assert [f.seq for f in feedback] == list(range(len(feedback)))
    assert {f.execution_id for f in feedback} == {result.execution_id}


def test_a_failure_is_aborted_with_the_users_line(graph):
    handle, _ = send(graph, "x = 1\nraise ValueError('nope')\n")
    status, result = outcome(graph, handle)
    assert status == GoalStatus.STATUS_ABORTED
    assert (result.status, result.exit_code) == (R.STATUS_FAILED, 1)
    assert result.error == "ValueError: nope (line 2)"
    assert 'File "<submitted>", line 2' in result.stderr


def test_a_refused_goal_is_accepted_then_aborted_with_the_reason(graph):
    handle, _ = send(graph, "def broken(:\n")
    status, result = outcome(graph, handle)
    assert status == GoalStatus.STATUS_ABORTED
    assert result.status == R.STATUS_REJECTED and result.error.startswith("SyntaxError")
    assert "line 1" in result.error


def test_cancel_is_canceled_and_the_code_stopped(graph):
    executor = graph[0]
    handle, feedback = send(graph, "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    wait_until(lambda: (executor.spin_once(timeout_sec=0.05), feedback)[1], 30, "the code to start")
    cancel = handle.cancel_goal_async()
    executor.spin_until_future_complete(cancel, timeout_sec=10)
    assert cancel.result() is not None and len(cancel.result().goals_canceling) == 1
    status, result = outcome(graph, handle)
    assert status == GoalStatus.STATUS_CANCELED
    assert (result.status, result.error, result.exit_code) == (
        R.STATUS_CANCELED, "canceled by the client", -2)
