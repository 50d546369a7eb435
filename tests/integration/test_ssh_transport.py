"""The SSH transport against the lab's real sshd: one long-lived shell per host, framed output.

The shell collects stdout and stderr as they arrive and hands a command's result over when both
of its markers are in; these tests hold it to exact output under load, exit codes, timeouts and a
shell that dies under it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import pytest
from conftest import LabEnv

from toolkit.app import App
from toolkit.errors import CommandTimeout, Unreachable
from toolkit.remediation.quoting import cmd, script
from toolkit.transports import Connector, Transport

pytestmark = pytest.mark.integration


@pytest.fixture
def transport(lab: LabEnv) -> Iterator[Transport]:
    app = App(lab.root)
    connector = Connector(app.connect_options(), app.credentials)
    host = app.inventory.select("lab-01")[0]
    opened = connector.open(host)
    try:
        yield opened
    finally:
        opened.close()
        connector.close()


def test_large_interleaved_stdout_and_stderr_come_back_whole_and_apart(
    transport: Transport,
) -> None:
    # 4 MiB on each stream, written alternately: more than the channel window and the
    # client's buffers, so both must be drained while the command runs.
    big = script(
        "i=0; while [ $i -lt 64 ]; do head -c 65536 /dev/zero | tr '\\0' o; "
        "head -c 65536 /dev/zero | tr '\\0' e >&2; i=$((i+1)); done; exit 7"
    )
    result = transport.run(big, timeout=60)
    assert result.exit_code == 7
    assert result.stdout == "o" * (64 * 65536)
    assert result.stderr == "e" * (64 * 65536)


def test_output_is_exact_with_or_without_a_final_newline(transport: Transport) -> None:
    assert transport.run(script("printf 'no newline'")).stdout == "no newline"
    assert transport.run(script("printf 'one\\n\\n'")).stdout == "one\n\n"
    empty = transport.run(cmd("true"))
    assert (empty.exit_code, empty.stdout, empty.stderr) == (0, "", "")
    assert transport.run(script("exit 255")).exit_code == 255
    assert transport.run(script("echo oops >&2; exit 3")).stderr == "oops\n"


def test_commands_share_one_shell_and_its_output_never_leaks_into_the_next(
    transport: Transport,
) -> None:
    # $$ inside the per-command subshell is the long-lived shell's pid
    pids = {transport.run(script("echo $$")).stdout for _ in range(20)}
    assert len(pids) == 1
    for i in range(50):
        data = hashlib.sha256(str(i).encode()).hexdigest()
        result = transport.run(cmd("echo", data))
        assert result.stdout == data + "\n", i


def test_the_hosts_shell_is_bash_started_by_the_login_shell_itself(transport: Transport) -> None:
    # Where /bin/bash exists the login shell execs it directly (no /bin/sh in between: one exec
    # less per connection), and commands still run in their own process group under it.
    argv = transport.run(script("tr '\\0' ' ' </proc/$$/cmdline")).stdout.split()
    assert argv == ["/bin/bash", "--noprofile", "--norc"]
    groups = transport.run(script("ps -o pgid= -p $$; ps -o pgid= -p $BASHPID"))
    shell_group, job_group = groups.stdout.split()
    assert shell_group != job_group


def test_a_timed_out_command_is_stopped_on_the_host_and_the_shell_goes_on(
    transport: Transport,
) -> None:
    # The host's shell stops the command's process group (a pipeline, a child of a child) and
    # confirms it; the same shell then runs the next command.
    before = transport.run(script("echo $$")).stdout
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="stopped on the host") as caught:
        transport.run(script("sleep 31 | cat; sh -c 'sleep 32'"), timeout=0.5)
    assert time.monotonic() - started < 5
    assert "SIGTERM to its process group" in caught.value.detail
    after = transport.run(script("echo $$; echo after"))
    assert after.exit_code == 0 and after.stdout.endswith("after\n")
    assert after.stdout.split()[0] == before.strip()  # the same shell
    left = transport.run(script("ps -eo args | grep -c '^sleep 3[12]$' || true")).stdout
    assert left.strip() == "0"  # nothing of it runs on


def test_exit_exec_and_a_commands_own_traps_keep_the_framing(transport: Transport) -> None:
    # The job's EXIT trap reports `exit N`; text that sets traps or execs gets a subshell of
    # its own, so its result still comes back framed.
    assert transport.run(script("echo a; exit 3; echo b")).exit_code == 3
    execd = transport.run(script("exec echo hi"))
    assert (execd.exit_code, execd.stdout) == (0, "hi\n")
    trapped = transport.run(script("trap 'echo bye' EXIT; echo hi"))
    assert (trapped.exit_code, trapped.stdout) == (0, "hi\nbye\n")
    assert transport.run(script("echo $((1+1))")).stdout == "2\n"  # the next one is fine


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace_period(
    transport: Transport,
) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="killed on the host") as caught:
        transport.run(script("trap '' TERM; sleep 33"), timeout=0.5)
    assert 5 <= time.monotonic() - started < 10  # SIGKILL after the 5 s grace period
    assert "SIGKILL" in caught.value.detail
    left = transport.run(script("ps -eo args | grep -c '^sleep 33$' || true")).stdout
    assert left.strip() == "0"


def test_interrupt_stops_the_command_in_flight_from_another_thread(transport: Transport) -> None:
    import threading

    from toolkit.errors import CommandInterrupted

    threading.Timer(0.5, transport.interrupt).start()
    started = time.monotonic()
    with pytest.raises(CommandInterrupted, match="stopped on the host"):
        transport.run(script("sleep 34"), timeout=30)
    assert time.monotonic() - started < 5


def test_a_shell_that_dies_under_a_command_is_replaced_before_the_next(
    transport: Transport,
) -> None:
    # The command runs as a job: its result still arrives when it kills the host's shell, and
    # the next command (nothing in flight when the shell went) gets a new shell.
    first = transport.run(script("echo $$; kill -9 $$; sleep 0.2; echo done"))
    assert first.exit_code == 0 and first.stdout.endswith("done\n")
    time.sleep(0.3)
    after = transport.run(script("echo $$"))
    assert after.exit_code == 0 and after.stdout.split()[0] != first.stdout.split()[0]


def test_a_connection_lost_mid_command_is_a_lost_session(transport: Transport) -> None:
    # The session's own sshd process is killed under the command: the connection is gone.
    with pytest.raises(Unreachable, match="session lost"):
        transport.run(script("kill -9 $PPID; sleep 5"))


def test_what_one_turn_of_the_loop_writes_leaves_in_one_send() -> None:
    # The corked transport under asyncssh: packets written in one turn of the event loop (a
    # channel packet and asyncssh's SSH_MSG_IGNORE before it) go out as one send, in order;
    # close() sends what is pending first; abort() drops it.
    import asyncio

    from toolkit.transports.ssh import _CorkedTCP

    class Conn(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport

    async def main() -> tuple[list[bytes], list[bytes]]:
        received: list[bytearray] = []
        closed: list[asyncio.Event] = []

        class Sink(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.data, self.closed = bytearray(), asyncio.Event()
                received.append(self.data)
                closed.append(self.closed)

            def data_received(self, data: bytes) -> None:
                self.data.extend(data)

            def connection_lost(self, exc: Exception | None) -> None:
                self.closed.set()

        server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, conn = await _CorkedTCP().create_connection(Conn, "127.0.0.1", port)
        assert isinstance(conn, Conn)
        sends: list[bytes] = []
        real_write = transport.write  # type: ignore[attr-defined]

        def spy(data: bytes) -> None:
            sends.append(bytes(data))
            real_write(data)

        transport.write = spy  # type: ignore[attr-defined]
        for chunk in (b"ignore|", b"data|", b"more|"):
            conn.transport.write(chunk)
        assert sends == []  # nothing is sent before the turn ends
        await asyncio.sleep(0)
        conn.transport.write(b"last")
        conn.transport.close()  # sends what is pending, then closes
        _, dropped = await _CorkedTCP().create_connection(Conn, "127.0.0.1", port)
        assert isinstance(dropped, Conn)
        dropped.transport.write(b"never sent")
        dropped.transport.abort()
        for _ in range(500):  # until the server has accepted both connections
            if len(closed) == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(*(c.wait() for c in closed)), 5)
        server.close()
        return sends, [bytes(r) for r in received]

    sends, received = asyncio.run(main())
    assert sends == [b"ignore|data|more|", b"last"]
    assert received == [b"ignore|data|more|last", b""]
