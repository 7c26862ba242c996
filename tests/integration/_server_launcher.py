"""Start the real server the way ``llm-rec serve`` does (``run_server``), but with a fake
backend slowed to DELAY seconds per scoring call, so tests can catch requests in flight.

    python tests/integration/_server_launcher.py PORT DELAY
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llm_recommender import Recommender  # noqa: E402
from llm_recommender.server import ServerSettings, run_server  # noqa: E402
from tests.server_fakes import SlowFakeBackend  # noqa: E402

if __name__ == "__main__":
    port, delay = int(sys.argv[1]), float(sys.argv[2])
    settings = ServerSettings(host="127.0.0.1", port=port, max_queue=8, graceful_timeout_s=20, log_level="info")
    run_server(lambda: Recommender(backend=SlowFakeBackend(delay_s=delay)), settings)
