import pytest

from simulator import Clock, Simulator, SimulatorServer

SIM_KEY = "sk-sim-test-0123456789abcdef"


@pytest.fixture
def sim_clock():
    return Clock(frozen=True)


@pytest.fixture
def simulator(sim_clock):
    """A real simulator on a free port, with a clock only the test moves."""
    server = SimulatorServer(Simulator(seed=7, speed=1.0, clock=sim_clock), api_key=SIM_KEY)
    with server:
        yield server


@pytest.fixture
def connection(db, simulator):
    from batches.models import Connection

    conn = Connection(name="Simulator", slug="sim", base_url=simulator.url, poll_interval=15)
    conn.set_api_key(SIM_KEY)
    conn.save()
    return conn
