"""numina.wandb_mirror: Weights & Biases as a mirror of the run folder, offline by default.

Every experiment writes its results into a run folder first; `Tracker` mirrors the same content into
W&B so runs can be followed and compared there. Modules: mode (online, offline or disabled, decided
once before any work, never a prompt), media (the project's data as W&B media), run_log (the run's
transaction log, so that a finished run is complete on disk), tracker (the run itself). An offline
run is uploaded later with `wandb sync <Tracker.wandb_dir>`.
"""

from numina.wandb_mirror.media import colorize, figure_to_array, to_plain
from numina.wandb_mirror.mode import Mode, check_mode, has_api_key, resolve_mode, server_problem
from numina.wandb_mirror.tracker import TERMINATED, Tracker, exit_status, logged_already, record_logged

__all__ = [
    "TERMINATED",
    "Mode",
    "Tracker",
    "check_mode",
    "colorize",
    "exit_status",
    "figure_to_array",
    "has_api_key",
    "logged_already",
    "record_logged",
    "resolve_mode",
    "server_problem",
    "to_plain",
]
